"""Test session setup: four fake CPU devices, so sharding is tested on any machine; XLA's
backend (LLVM) optimisation at level 1, since the tests' programs are small and compile-bound;
and one compilation cache for the session and its pytest-xdist workers (tests and the training
subprocesses they start compile the same small programs again and again)."""

import os
import shutil
import tempfile

# Must happen before JAX initialises its backends. The optimisation level changes how the
# optimised HLO becomes machine code, not the HLO (benchmarks and users keep the default):
# at 1 a test-size train step compiled in 8.6 s instead of 10.6 s (4 devices: 16.5 instead of
# 21.6 s) and ran as fast. Level 0 compiled faster still but gave the quickstart's video stage
# a NaN gradient that levels 1 and 2 and op-by-op execution do not: not used.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=4"
                           + " --xla_backend_optimization_level=1").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Made by the process that starts the session (pytest-xdist workers and training subprocesses
# inherit the variable) and removed when that session ends: ~50 MB per run otherwise stays in
# the temporary folder.
_OWN_CACHE_DIR = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _OWN_CACHE_DIR = tempfile.mkdtemp(prefix="rednet_jax_test_compile_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE_DIR


def pytest_unconfigure(config):
  del config
  if _OWN_CACHE_DIR:
    shutil.rmtree(_OWN_CACHE_DIR, ignore_errors=True)


def one_device_environment() -> dict[str, str]:
  """This process's environment with one CPU device instead of four, for subprocesses that run
  a training as a one-CPU user would: XLA compiles a 4-device program in about twice the time.
  (The trainer on 4 devices: test_training.py; the train step: test_train_step.py.)"""
  flags = os.environ["XLA_FLAGS"].replace("--xla_force_host_platform_device_count=4",
                                          "--xla_force_host_platform_device_count=1")
  return dict(os.environ, XLA_FLAGS=flags)
