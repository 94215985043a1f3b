"""Speed and memory of every system: forward, full train step, XLA compile time, peak memory.

  python benchmarks/model_step.py                      # RED-Net v1 (CPU: about 10 minutes)
  python benchmarks/model_step.py --widths=0.25 --sizes=64 --steps=1,2
  # RED-Net v2 at the paper's width (VGG-16, ResNet-152, and Table 7's two-network cascade)
  # and the CPU presets' 1/8 width, K = 2 (detection then regression):
  python benchmarks/model_step.py --models=rednet_v2_vgg,rednet_v2_resnet,rednet_v2_cascade \
    --widths=1.0,0.125 --sizes=128 --steps=2
  # DRR (a still-image model: T frames are T images) at Table VIII's four settings, K = 8:
  python benchmarks/model_step.py --models=drr_vgg_s,drr_vgg19 --widths=1.0 --sizes=128,256 \
    --steps=8 --frames=1 --repeats=3

Each model is its video stage (temporal module, identity head, and v1's f_REG), T=10 frames, one
clip per batch (--clips; DRR: its image stage, T images). The shipped model's training setting:

  python benchmarks/model_step.py --widths=0.25 --sizes=64 --steps=2 --clips=4 \
    --lstm_hidden=128 --temporal_residual --bn_momentum=0.9 --z0=prediction
 v2's K steps are one detection step followed by
K-1 regression steps (K=1: a single regression step). The train step is the project's `train_step.make_train_step` (uint8
normalisation, the system's loss, gradient, SGD-momentum update, metrics) with the state
donated. "params (MB)" is the float32 parameter size, the unit of the papers' model sizes
(RED-Net v2: 184 MB VGG, 257 MB ResNet-152).
Times are medians of --repeats calls after one warm-up call. Each configuration runs in its own
process so its peak resident memory (RSS) is its own; "XLA peak" is the compiled train step's
buffer estimate (arguments + outputs + temporaries) from XLA's memory analysis.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time
import types

from absl import app, flags

MODELS = ("rednet_v1", "rednet_v2_vgg", "rednet_v2_resnet", "rednet_v2_cascade", "drr_vgg19",
          "drr_vgg_s")

flags.DEFINE_list("models", ["rednet_v1"], f"systems to measure, of {list(MODELS)}")
flags.DEFINE_list("widths", ["1.0", "0.25"], "channel width multipliers")
flags.DEFINE_list("sizes", ["128", "64"], "input sizes (px)")
flags.DEFINE_list("steps", ["1", "2", "3"], "K spatial steps")
flags.DEFINE_integer("frames", 10, "T frames per clip")
flags.DEFINE_integer("repeats", 5, "timed calls per measurement (median reported)")
flags.DEFINE_enum("unroll", "full", ["full", "rolled"], "nn.scan unroll over K")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "activation dtype")
flags.DEFINE_bool("cpu_conv_gradients", True, "CPU: models/conv.py's convolution gradients "
                  "(False: XLA's own); no effect on accelerators")
flags.DEFINE_bool("cpu_ynn_fusions", False, "CPU: compile with XLA's default YNNPACK fusions "
                  "(False: the project's setting, XLA's own kernels; models/conv.py)")
# The shipped model's training setting differs from the defaults (rednet_v1 only):
# --clips=4 --lstm_hidden=128 --temporal_residual --bn_momentum=0.9 --z0=prediction.
flags.DEFINE_integer("clips", 1, "clips per batch")
flags.DEFINE_integer("lstm_hidden", 256, "rednet_v1: f_tRNN LSTM width")
flags.DEFINE_bool("temporal_residual", False, "rednet_v1: f_tRNN output added to C_pe")
flags.DEFINE_float("bn_momentum", 0.99, "rednet_v1: BatchNorm momentum")
flags.DEFINE_float("dropout", 0.4, "rednet_v1: dropout rate")
flags.DEFINE_integer("identities", 105, "identity classes of f_CLS")
flags.DEFINE_enum("z0", "ground_truth", ["ground_truth", "prediction"],
                  "z_0 of frames after the first in training (the train step's init_from)")
flags.DEFINE_string("one", None, "internal: [model,]width,size,K for a single child run "
                    "(model defaults to rednet_v1)")
FLAGS = flags.FLAGS


def configuration(spec: str) -> tuple[str, float, int, int]:
  """(model, width, size, K) of a "[model,]width,size,K" spec (model defaults to rednet_v1)."""
  fields = spec.split(",")
  name, width, size, k = fields if len(fields) == 4 else ["rednet_v1"] + fields
  return name, float(width), int(size), int(k)


def model_and_loss(name: str, width: float, k: int, unroll: int, dtype: str
                   ) -> tuple[dict, dict]:
  """(model config, loss fields) of `name`'s video stage at this width and K."""
  common = dict(width=width, use_temporal=True, use_identity=True,
                num_identities=FLAGS.identities, scan_unroll=unroll, dtype=dtype)
  if name == "rednet_v1":
    # f_REG weight 0.01: at lr 0.01 an unweighted Euclidean f_REG loss diverges in a few steps
    # (its 512-d max-pooled ReLU features make the curvature ~2|x|^2 >> 2/lr).
    return (dict(name="rednet_v1", num_steps=k, use_shape_regression=True,
                 lstm_hidden=FLAGS.lstm_hidden, temporal_residual=FLAGS.temporal_residual,
                 bn_momentum=FLAGS.bn_momentum, dropout_rate=FLAGS.dropout, **common),
            {"weights": {"shape": 0.01}})
  if name.startswith("drr_"):   # the drr config's from-scratch fields; 'sum' LSTM (341 M)
    return (dict(name="drr", backbone=name.removeprefix("drr_"), width=width, num_steps=k,
                 batch_norm=True, regressor_fan_in_scaling=True, scan_unroll=unroll,
                 dtype=dtype), {})
  steps = ("regression",) if k == 1 else ("detection",) + ("regression",) * (k - 1)
  encoder = dict(rednet_v2_vgg=dict(encoder="vgg16"), rednet_v2_resnet=dict(encoder="resnet"),
                 rednet_v2_cascade=dict(encoder="resnet", share_weights=False))[name]
  return dict(name="rednet_v2", steps=steps, **encoder, **common), {}


def build(name: str, width: float, size: int, k: int, unroll: int) -> types.SimpleNamespace:
  """The model, a random batch of the flags' shape, its initial train state and the jitted train
  step (`train_step.make_train_step`, as the trainer builds it) of one configuration."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp
  import numpy as np
  from rednet_jax.models import build_model
  from rednet_jax.training.train_step import TrainState, make_optimizer, make_train_step

  t, clips = FLAGS.frames, FLAGS.clips
  model_config, loss_fields = model_and_loss(name, width, k, unroll, FLAGS.dtype)
  model = build_model(model_config)
  rng = np.random.default_rng(0)
  mean_shape = jnp.asarray(rng.uniform(0.3 * size, 0.7 * size, (68, 2)), jnp.float32)
  batch = {"image": rng.integers(0, 256, size=(clips, t, size, size, 3), dtype=np.uint8),
           "landmarks": mean_shape + jnp.asarray(rng.normal(size=(clips, t, 68, 2)),
                                                 jnp.float32),
           "identity": jnp.zeros((clips,), jnp.int32), "valid": jnp.ones((clips,), bool)}
  frames = model.normalise(batch["image"])
  init_points = jnp.broadcast_to(mean_shape, batch["landmarks"].shape)
  variables = model.init_variables(frames, init_points)
  tx, schedule = make_optimizer(weight_decay=5e-4)
  state = TrainState(jnp.zeros((), jnp.int32), variables["params"], variables["batch_stats"],
                     tx.init(variables["params"]))
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",),
                           axis_types=(jax.sharding.AxisType.Auto,))
  make_step = lambda m, cpu_conv_gradients: make_train_step(
      m, tx, schedule, mean_shape, mesh, loss_fields=loss_fields, init_from=FLAGS.z0,
      cpu_conv_gradients=cpu_conv_gradients, cpu_ynn_fusions=FLAGS.cpu_ynn_fusions)
  return types.SimpleNamespace(
      model=model, batch=batch, frames=frames, init_points=init_points, variables=variables,
      state=state, rng_key=jax.random.key(1), make_step=make_step,
      train_step=make_step(model, FLAGS.cpu_conv_gradients))


def median_seconds(fn, repeats: int) -> float:
  """Median wall time of `repeats` calls of `fn` (its result waited for), after one untimed."""
  import jax  # pylint: disable=g-import-not-at-top
  times = []
  for _ in range(repeats + 1):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times[1:])


def measure(name: str, width: float, size: int, k: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np
  from rednet_jax.models import build_model, conv
  from rednet_jax.models.system import parameter_count

  t, clips = FLAGS.frames, FLAGS.clips
  t_start = time.perf_counter()
  log = lambda *a: print(f"[{time.perf_counter() - t_start:7.1f}s]", *a, file=sys.stderr,
                         flush=True)
  setup = build(name, width, size, k, k if FLAGS.unroll == "full" else 1)
  model, batch, frames, init_points = setup.model, setup.batch, setup.frames, setup.init_points
  variables, state, rng_key = setup.variables, setup.state, setup.rng_key
  log("init done")

  def forward(variables, frames):
    return model.apply(variables, frames, init_points)["points"][-1]

  t0 = time.perf_counter()
  step = setup.train_step.lower(state, batch, rng_key).compile()
  compile_train = time.perf_counter() - t0
  log(f"train step compiled in {compile_train:.1f}s")
  t0 = time.perf_counter()
  options = conv.cpu_compiler_options(jax.default_backend(), FLAGS.cpu_ynn_fusions)
  fwd = jax.jit(forward, compiler_options=options).lower(variables, frames).compile()
  compile_fwd = time.perf_counter() - t0
  # FLOPs of the arithmetic: XLA's cost analysis of the lowered (not compiled) step, unrolled
  # and with XLA's own gradients, since the analysis counts a loop's body once (a rolled scan;
  # models/conv.py's weight gradients). Every variant computes the same products.
  unrolled = build_model(model_and_loss(name, width, k, k, FLAGS.dtype)[0])
  train_flops = setup.make_step(unrolled, False).lower(state, batch, rng_key).cost_analysis(
  )["flops"]
  forward_flops = jax.jit(lambda v, f: unrolled.apply(v, f, init_points)["points"][-1]).lower(
      variables, frames).cost_analysis()["flops"]
  memory = step.memory_analysis()
  xla_peak = (memory.argument_size_in_bytes + memory.output_size_in_bytes
              + memory.temp_size_in_bytes - memory.alias_size_in_bytes)

  holder = {"state": state}

  def one_train_step():
    holder["state"], metrics = step(holder["state"], batch, rng_key)
    return metrics["loss"]

  fwd_time = median_seconds(lambda: fwd(variables, frames), FLAGS.repeats)
  log(f"forward {fwd_time:.3f}s")
  train_time = median_seconds(one_train_step, FLAGS.repeats)
  log(f"train step {train_time:.3f}s")
  loss = float(one_train_step())
  n_params = parameter_count(variables["params"])
  return {"model": name, "width": width, "size": size, "K": k, "T": t, "clips": clips,
          "forward_s": fwd_time,
          "train_step_s": train_time, "compile_train_s": compile_train,
          "compile_forward_s": compile_fwd, "xla_peak_mb": xla_peak / 2**20,
          "train_gflop": train_flops / 1e9, "forward_gflop": forward_flops / 1e9,
          "train_gflops": train_flops / 1e9 / train_time,
          "forward_gflops": forward_flops / 1e9 / fwd_time,
          "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          "params_m": n_params / 1e6, "params_mb": n_params * 4 / 2**20,   # float32, MiB
          "loss_finite": bool(np.isfinite(loss)),
          "device": str(jax.devices()[0].device_kind)}


def main(argv):
  del argv
  if FLAGS.one:
    print("RESULT " + json.dumps(measure(*configuration(FLAGS.one))))
    return
  unknown = sorted(set(FLAGS.models) - set(MODELS))
  if unknown:
    sys.exit(f"--models: unknown {unknown}; choose from {list(MODELS)}")
  rows, clips = [], FLAGS.clips
  for name in FLAGS.models:
    for width in FLAGS.widths:
      for size in FLAGS.sizes:
        for k in FLAGS.steps:
          cmd = [sys.executable, os.path.abspath(__file__), f"--one={name},{width},{size},{k}",
                 f"--frames={FLAGS.frames}", f"--repeats={FLAGS.repeats}",
                 f"--unroll={FLAGS.unroll}", f"--dtype={FLAGS.dtype}",
                 f"--cpu_conv_gradients={FLAGS.cpu_conv_gradients}",
                 f"--cpu_ynn_fusions={FLAGS.cpu_ynn_fusions}", f"--clips={clips}",
                 f"--lstm_hidden={FLAGS.lstm_hidden}",
                 f"--temporal_residual={FLAGS.temporal_residual}",
                 f"--bn_momentum={FLAGS.bn_momentum}", f"--dropout={FLAGS.dropout}",
                 f"--identities={FLAGS.identities}", f"--z0={FLAGS.z0}"]
          out = subprocess.run(cmd, capture_output=True, text=True, check=False)
          lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
          if out.returncode or not lines:
            sys.exit(f"configuration {name},{width},{size},{k} failed:\n{out.stderr[-3000:]}")
          rows.append(json.loads(lines[-1][len("RESULT "):]))
          print(f"done {name} {width} {size} {k}", file=sys.stderr, flush=True)
  print(f"\nVideo stage, T={FLAGS.frames}, batch {clips} clip(s), z_0 {FLAGS.z0}, "
        f"unroll={FLAGS.unroll}, {FLAGS.dtype}, "
        f"cpu_conv_gradients={FLAGS.cpu_conv_gradients}, "
        f"cpu_ynn_fusions={FLAGS.cpu_ynn_fusions}, device {rows[0]['device']}, medians "
        f"of {FLAGS.repeats}; GFLOP/s = XLA's FLOP count / time\n")
  print("| model | width | size | K | params (M) | params (MB) | forward (s) | forward GFLOP/s "
        "| train step (s) | train GFLOP/s | compile train (s) | compile fwd (s) | XLA peak (MB) "
        "| RSS peak (MB) |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for r in rows:
    if not r["loss_finite"]:
      sys.exit(f"non-finite loss in {r}")
    print(f"| {r['model']} | {r['width']} | {r['size']} | {r['K']} | {r['params_m']:.2f} "
          f"| {r['params_mb']:.0f} | {r['forward_s']:.3f} | {r['forward_gflops']:.0f} "
          f"| {r['train_step_s']:.3f} | {r['train_gflops']:.0f} | {r['compile_train_s']:.1f} "
          f"| {r['compile_forward_s']:.1f} "
          f"| {r['xla_peak_mb']:.0f} | {r['rss_peak_mb']:.0f} |")


if __name__ == "__main__":
  app.run(main)
