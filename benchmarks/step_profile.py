"""Where a train step's time goes: a profiler trace of a few steps, split by kind of work.

  python benchmarks/step_profile.py                        # RED-Net v1, width 0.25, 64 px, K 2
  python benchmarks/step_profile.py --one=1.0,128,3 --profiled_steps=2
  python benchmarks/step_profile.py --cpu_conv_gradients=false   # XLA's own gradients
  # the shipped model's training setting:
  python benchmarks/step_profile.py --clips=4 --lstm_hidden=128 --temporal_residual \
    --bn_momentum=0.9 --z0=prediction

The configuration flags are `model_step.py`'s (same model, batch and train step). The step is
compiled, run twice to warm up, then --profiled_steps times under `jax.profiler.trace`. Every XLA
operation the trace records (its thunk, self time: a loop's time excludes its body's operations)
is put in one row by its HLO metadata:

  convolution forward        forward operations that are or fuse a convolution
  convolution input gradient `models/conv.py`'s canonical input gradient (CPU)
  convolution weight gradient `models/conv.py`'s weight gradient: the GEMM loop, or XLA's own
                             below its size threshold (CPU)
  convolution, other         XLA's own transposed convolutions (accelerators, or
                             --cpu_conv_gradients=false), and backward fusions that
                             hold a convolution
  forward / backward: <op>   everything else, by the JAX primitive named in the metadata
  update and the rest        operations outside the model's forward and backward pass

Times are summed over the runtime's threads (so the "thread ms" column can exceed the wall
time), per step. Keep --trace_dir to open the trace in xprof / TensorBoard.

The step profiled is compiled with XLA:CPU's YNNPACK fusions (--cpu_ynn_fusions defaults to
True here, unlike the project's programs): XLA's Eigen convolutions, which the project uses,
run asynchronously on the thread pool, outside the operation events the trace records, so with
--cpu_ynn_fusions=false most convolution time is missing from the tables.
"""

import collections
import os
import re
import statistics
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_step  # pylint: disable=wrong-import-position

flags.DEFINE_integer("profiled_steps", 3, "train steps traced")
flags.DEFINE_integer("rows", 12, "rows of the per-layer and per-operation tables")
flags.DEFINE_string("trace_dir", None, "where to write the trace (default: a temporary folder)")
FLAGS = flags.FLAGS
FLAGS.set_default("cpu_ynn_fusions", True)   # see the docstring


def hlo_index(hlo_text: str) -> dict[str, tuple[str, bool]]:
  """Instruction name -> (op_name metadata, whether it is or calls a convolution)."""
  called_convolutions = {}
  for match in re.finditer(r"^%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo_text, re.S | re.M):
    called_convolutions[match.group(1)] = " convolution(" in match.group(2)
  index = {}
  for line in hlo_text.splitlines():
    match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (.*)", line)
    if not match:
      continue
    body = match.group(2)
    op_name = re.search(r'op_name="([^"]*)"', body)
    calls = re.search(r"calls=%?([\w.\-]+)", body)
    is_conv = " convolution(" in " " + body or bool(calls and called_convolutions.get(
        calls.group(1)))
    index.setdefault(match.group(1), (op_name.group(1) if op_name else "", is_conv))
  return index


def category(op_name: str, is_conv: bool) -> str:
  backward = "transpose(" in op_name
  if "/input_gradient" in op_name:
    return "convolution input gradient"
  if "/weight_gradient" in op_name:
    return "convolution weight gradient"
  if is_conv:
    return "convolution, other (XLA's backward, or fused)" if backward else "convolution forward"
  if "jvp(" not in op_name:
    return "update and the rest"
  primitive = op_name.rsplit("/", 1)[-1] or "?"
  return f"{'backward' if backward else 'forward'}: {primitive}"


def layer(op_name: str) -> str:
  """The model's module path in an op_name ("spatial/decoder/deconv1_1"), else "-"."""
  parts = [p for p in op_name.split("/")
           if p and "(" not in p and not p.startswith("branch_")
           and p not in ("closed_call", "cond", "while", "body", "input_gradient",
                         "weight_gradient")]
  modules = [p for p in parts[:-1] if not p.startswith("conv_general") and p != "conv"]
  return "/".join(modules[:4]) or "-"


def self_times(plane) -> list[tuple[str, float]]:
  """(HLO instruction, self time in ms) of every thunk event on every thread of the plane."""
  out = []
  for line in plane.lines:
    events = sorted((e for e in line.events if any(k == "hlo_op" for k, _ in e.stats)),
                    key=lambda e: (e.start_ns, -e.duration_ns))
    stack = []   # [end_ns, index into out]
    for e in events:
      while stack and stack[-1][0] <= e.start_ns:
        stack.pop()
      if stack:                      # nested in a loop (or call) thunk: not the parent's own time
        parent = stack[-1][1]
        out[parent] = (out[parent][0], out[parent][1] - e.duration_ns / 1e6)
      name = dict(e.stats)["hlo_op"]
      out.append((name, e.duration_ns / 1e6))
      stack.append((e.start_ns + e.duration_ns, len(out) - 1))
  return out


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  from jax.profiler import ProfileData

  if jax.default_backend() != "cpu":
    sys.exit("step_profile.py splits XLA:CPU thunk traces; on accelerators trace the step with "
             "--config.profile_steps and open it in xprof")
  name, width, size, k = model_step.configuration(FLAGS.one or "0.25,64,2")
  setup = model_step.build(name, width, size, k, k if FLAGS.unroll == "full" else 1)
  step = setup.train_step.lower(setup.state, setup.batch, setup.rng_key).compile()
  index = hlo_index(step.as_text())
  state = setup.state
  walls = []
  for _ in range(2):
    state, metrics = step(state, setup.batch, setup.rng_key)
  jax.block_until_ready(metrics)
  trace_dir = FLAGS.trace_dir or tempfile.mkdtemp(prefix="step_profile_")
  with jax.profiler.trace(trace_dir):
    for _ in range(FLAGS.profiled_steps):
      t0 = time.perf_counter()
      state, metrics = step(state, setup.batch, setup.rng_key)
      jax.block_until_ready(metrics)
      walls.append(time.perf_counter() - t0)
  files = [os.path.join(d, f) for d, _, fs in os.walk(trace_dir) for f in fs
           if f.endswith(".xplane.pb")]
  if len(files) != 1:
    sys.exit(f"expected one .xplane.pb under {trace_dir}, found {files}")
  planes = [p for p in ProfileData.from_file(files[0]).planes if p.name == "/host:CPU"]
  if not planes:
    sys.exit(f"no /host:CPU plane in the trace {files[0]}")
  by_category, by_layer, by_op = (collections.Counter() for _ in range(3))
  unknown = 0.0
  for instruction, ms in self_times(planes[0]):
    if instruction not in index:
      unknown += ms
      continue
    op_name, is_conv = index[instruction]
    kind = category(op_name, is_conv)
    by_category[kind] += ms / FLAGS.profiled_steps
    by_layer[(layer(op_name), kind)] += ms / FLAGS.profiled_steps
    by_op[(instruction, kind, op_name)] += ms / FLAGS.profiled_steps
  total = sum(by_category.values())
  print(f"\n{name} width {width}, {size} px, K {k}, T {FLAGS.frames}, {FLAGS.clips} clip(s), "
        f"unroll={FLAGS.unroll}, cpu_conv_gradients={FLAGS.cpu_conv_gradients}, "
        f"cpu_ynn_fusions={FLAGS.cpu_ynn_fusions}: wall "
        f"{statistics.median(walls) * 1e3:.0f} ms per step (median of {FLAGS.profiled_steps}), "
        f"{total:.0f} thread ms per step in XLA operations; trace in {trace_dir}\n")
  print("| work | thread ms per step | share |")
  print("| --- | --- | --- |")
  for kind, ms in by_category.most_common():
    if ms >= 0.005 * total:
      print(f"| {kind} | {ms:.1f} | {100 * ms / total:.1f} % |")
  rest = sum(ms for ms in by_category.values() if ms < 0.005 * total)
  print(f"| (rows under 0.5 % each) | {rest:.1f} | {100 * rest / total:.1f} % |")
  if unknown:
    print(f"| (not in the step's HLO) | {unknown / FLAGS.profiled_steps:.1f} | |")
  print(f"\n| layer | work | thread ms per step |\n| --- | --- | --- |")
  for (where, kind), ms in by_layer.most_common(FLAGS.rows):
    print(f"| {where} | {kind} | {ms:.1f} |")
  print(f"\n| XLA operation | work | thread ms per step | op_name |\n| --- | --- | --- | --- |")
  for (instruction, kind, op_name), ms in by_op.most_common(FLAGS.rows):
    print(f"| {instruction} | {kind} | {ms:.1f} | {op_name.removeprefix('jit(train_step)/')} |")


if __name__ == "__main__":
  app.run(main)
