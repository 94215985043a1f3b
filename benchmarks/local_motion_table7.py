"""Table 7 of Belmonte et al. (WACV 2019) on this machine: parameters, float32 size, streaming
frames/s at batch 1, beside the paper's numbers; plus the training step at the paper's batch.

  python benchmarks/local_motion_table7.py                 # all six, about 10 minutes on 2 cores
  python benchmarks/local_motion_table7.py --variants=2d,3drnn --frames=100

Streaming inference is what a tracker runs: one 64x64 uint8 crop per call, Z-score
normalisation, the window of the last 3 frames (the carry) and the network, jitted once, at
batch 1; the time per frame is the median over --frames calls after --warmup calls, so
frames/s excludes compilation (reported apart). The paper's CPU was an Intel Xeon E5 at
3.50 GHz, its GPU a GTX 1080 Ti. The train step is `train_step.make_train_step` (Adam, the
model's loss) at the paper's batch: 8 single frames (2D), 8 or 4 windows of 3 frames (2D /
3D temporal variants); its samples/s sets the CPU presets' step counts.
"""

import functools
import statistics
import sys
import time

from absl import app, flags

# Paper, Table 7: parameters (M), size (MB), frames/s on CPU and on GPU.
PAPER = {"2d": (3.8, 15, 178, 285), "3d": (11.1, 43, 40, 205), "2drnn": (14.2, 55, 60, 252),
         "3drnn": (17.4, 67, 36, 205), "2dfcrnn": (10.2, 40, 14, 104),
         "3dfcrnn": (14.9, 58, 11, 99)}
NAMES = {"2d": "2D", "3d": "3D", "2drnn": "2DRNN", "3drnn": "3DRNN", "2dfcrnn": "2DFCRNN",
         "3dfcrnn": "3DFCRNN"}

flags.DEFINE_list("variants", list(PAPER), "variants to measure")
flags.DEFINE_integer("frames", 200, "timed streaming calls per variant")
flags.DEFINE_integer("warmup", 10, "untimed calls first")
flags.DEFINE_integer("train_repeats", 5, "timed train steps (median)")
flags.DEFINE_float("width", 1.0, "channel multiplier (1.0: the paper's models)")
FLAGS = flags.FLAGS


def measure(variant: str) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp
  import numpy as np
  import optax
  from rednet_jax.models import build_model, conv
  from rednet_jax.models.local_motion import VARIANTS
  from rednet_jax.models.system import parameter_count
  from rednet_jax.training.train_step import TrainState, make_train_step

  convolution, recurrent, output = VARIANTS[variant]
  fields = dict(name="local_motion", convolution=convolution, recurrent=recurrent,
                output=output, width=FLAGS.width)
  model = build_model(fields)
  size, n_points = model.input_size, model.num_landmarks
  rng = np.random.default_rng(0)
  mean_shape = jnp.asarray(rng.uniform(16, 48, (n_points, 2)), jnp.float32)
  window = model.frames_per_prediction()
  variables = model.init_variables(jnp.zeros((1, window, size, size, 3)),
                                   jnp.zeros((1, window, n_points, 2)))
  inference = build_model({**fields, **model.inference_overrides})

  @functools.partial(jax.jit, compiler_options=conv.cpu_compiler_options(jax.default_backend()))
  def track_one(variables, image, carry):
    out = inference.apply(variables, inference.normalise(image), mean_shape[None, None], carry)
    return out["points"][-1, :, 0], out["carry"]

  images = rng.integers(0, 256, (FLAGS.frames + FLAGS.warmup, 1, 1, size, size, 3), np.uint8)
  carry = inference.initial_carry(1)
  t0 = time.perf_counter()
  compiled = track_one.lower(variables, images[0], carry).compile()
  compile_s = time.perf_counter() - t0
  times = []
  for i, image in enumerate(images):
    t0 = time.perf_counter()
    points, carry = compiled(variables, image, carry)
    jax.block_until_ready(points)
    if i >= FLAGS.warmup:
      times.append(time.perf_counter() - t0)
  per_frame = statistics.median(times)

  # Training step at the paper's batch: 8 (2D models) / 4 (3D models) samples.
  batch_size = 4 if convolution == "3d" else 8
  batch = {"image": rng.integers(0, 256, (batch_size, window, size, size, 3), np.uint8),
           "landmarks": jnp.asarray(rng.uniform(16, 48, (batch_size, window, n_points, 2)),
                                    jnp.float32),
           "identity": jnp.zeros((batch_size,), jnp.int32),
           "valid": jnp.ones((batch_size,), bool)}
  tx = optax.adam(1e-4)
  state = TrainState(jnp.zeros((), jnp.int32), variables["params"], variables["batch_stats"],
                     tx.init(variables["params"]))
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",),
                           axis_types=(jax.sharding.AxisType.Auto,))
  step = make_train_step(model, tx, optax.constant_schedule(1e-4), mean_shape, mesh)
  key = jax.random.key(0)
  t0 = time.perf_counter()
  state, metrics = step(state, batch, key)
  jax.block_until_ready(metrics)
  compile_train = time.perf_counter() - t0
  train_times = []
  for _ in range(FLAGS.train_repeats):
    t0 = time.perf_counter()
    state, metrics = step(state, batch, key)
    jax.block_until_ready(metrics)
    train_times.append(time.perf_counter() - t0)
  if not np.isfinite(float(metrics["loss"])):
    raise RuntimeError(f"{variant}: non-finite training loss")
  n = parameter_count(variables["params"])
  return {"variant": variant, "params_m": n / 1e6, "size_mb": n * 4 / 2 ** 20,
          "fps": 1.0 / per_frame, "ms_per_frame": 1000 * per_frame,
          "ms_spread": (1000 * min(times), 1000 * sorted(times)[int(0.9 * len(times))]),
          "compile_s": compile_s, "batch": batch_size,
          "train_step_s": statistics.median(train_times), "compile_train_s": compile_train,
          "device": jax.devices()[0].device_kind}


def main(argv):
  del argv
  unknown = sorted(set(FLAGS.variants) - set(PAPER))
  if unknown:
    sys.exit(f"--variants: unknown {unknown}; choose from {list(PAPER)}")
  rows = []
  for variant in FLAGS.variants:
    rows.append(measure(variant))
    print(f"done {variant}", file=sys.stderr, flush=True)
  print(f"\nTable 7 on {rows[0]['device']} (width {FLAGS.width}); streaming: batch 1, 64 px, "
        f"median of {FLAGS.frames} frames; paper: Xeon E5 3.5 GHz CPU, GTX 1080 Ti GPU\n")
  print("| model | params (M) paper / here | size (MB) paper / here (float32 MiB) | frames/s "
        "paper CPU / GPU | frames/s here (ms per frame: median, min-p90) | compile (s) | "
        "train step at batch (s) | train samples/s |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- |")
  for r in rows:
    p = PAPER[r["variant"]]
    low, high = r["ms_spread"]
    print(f"| {NAMES[r['variant']]} | {p[0]} / {r['params_m']:.2f} | {p[1]} / {r['size_mb']:.1f} "
          f"| {p[2]} / {p[3]} | **{r['fps']:.0f}** ({r['ms_per_frame']:.1f}, {low:.1f}-{high:.1f}) "
          f"| {r['compile_s']:.1f} | {r['train_step_s']:.3f} at {r['batch']} "
          f"| {r['batch'] / r['train_step_s']:.1f} |")


if __name__ == "__main__":
  app.run(main)
