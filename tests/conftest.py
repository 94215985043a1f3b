"""Test session setup: four fake CPU devices, so sharding is tested on any machine, and one
compilation cache for the session and its pytest-xdist workers (tests and the training
subprocesses they start compile the same small programs again and again)."""

import os
import tempfile

# Must happen before JAX initialises its backends.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      tempfile.mkdtemp(prefix="rednet_jax_test_compile_cache_"))
