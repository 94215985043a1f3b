"""Where models/conv.py's GEMM-loop weight gradient beats XLA's own (`conv._LOOP_MIN_ROWS`).

  python benchmarks/weight_gradient_threshold.py               # per layer, about 2 minutes
  python benchmarks/weight_gradient_threshold.py --layers= \
    --step=rednet_v1,1.0,128,3 --repeats=3   # whole steps, ~20 minutes

Per layer: the weight gradient alone (jitted, outside loops) of XLA's convolution gradient and
of the loop, forced on (`_LOOP_MIN_ROWS = 0`), medians of --repeats calls; "rows per image" is
what the threshold compares, (H + padding) x W. --layers entries are N:H:Ci:Co:k (square maps;
k x k kernels, 'SAME' padding, and k = 2 padded (1, 0) like DRR's deconvolution parities).
Whole steps (--step=[model,]width,size,K as model_step.py's --one, with its flags): the train
step built with each --step_rows threshold in turn, --rounds alternating rounds, medians of
--repeats steps after one untimed step.
"""

import sys

from absl import app, flags

import model_step

flags.DEFINE_list("layers", ["10:32:256:256:3", "16:32:256:512:3", "16:32:512:512:3",
                             "16:32:512:96:2", "10:40:256:256:3", "10:48:256:256:3",
                             "16:48:512:512:3", "10:64:128:128:3", "16:64:512:512:3",
                             "16:64:96:96:2", "10:128:64:64:3"],
                  "layers N:H:Ci:Co:k to time")
flags.DEFINE_string("step", None, "[model,]width,size,K of a whole train step to time")
flags.DEFINE_list("step_rows", ["1024", "2048"], "thresholds to build the whole step with")
flags.DEFINE_integer("rounds", 3, "alternating rounds of the whole-step thresholds")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp
  import numpy as np
  from rednet_jax.models import conv
  # As the whole steps (model_step's --cpu_ynn_fusions): the project's setting by default.
  options = conv.cpu_compiler_options(jax.default_backend(), FLAGS.cpu_ynn_fusions)

  default_rows = conv._LOOP_MIN_ROWS   # pylint: disable=protected-access
  rng = np.random.default_rng(0)
  if FLAGS.layers:
    print(f"\nweight gradient alone, {jax.devices()[0].device_kind}, medians of "
          f"{FLAGS.repeats}; threshold now {default_rows} rows; "
          f"cpu_ynn_fusions={FLAGS.cpu_ynn_fusions}\n")
    print("| layer (N x H x W x Ci -> Co) | rows per image | XLA's (ms) | loop (ms) |")
    print("| --- | --- | --- | --- |")
  for layer in FLAGS.layers:
    n, side, ci, co, k = (int(v) for v in layer.split(":"))
    pads = ((1, 0), (1, 0)) if k == 2 else ((k // 2, k // 2),) * 2
    out = side + sum(pads[0]) - k + 1
    x = jnp.asarray(rng.normal(size=(n, side, side, ci)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, ci, co)), jnp.float32)
    dy = jnp.asarray(rng.normal(size=(n, out, out, co)), jnp.float32)
    # pylint: disable=protected-access
    xla = jax.jit(lambda x, w, dy, p=pads: conv._xla_gradients(x, w, dy, (1, 1), p, None)[1],
                  compiler_options=options)
    conv._LOOP_MIN_ROWS = 0
    loop = jax.jit(lambda x, w, dy, p=pads: conv._weight_gradient(x, w, dy, (1, 1), p, None),
                   compiler_options=options)
    # pylint: enable=protected-access
    xla_s, loop_s = (model_step.median_seconds(lambda f=f: f(x, w, dy), FLAGS.repeats)
                     for f in (xla, loop))
    conv._LOOP_MIN_ROWS = default_rows   # pylint: disable=protected-access
    shape = f"{n} x {side} x {side} x {ci} -> {co}" + (f", {k}x{k}" if k != 3 else "")
    print(f"| {shape} | {(side + sum(pads[0])) * side:,} | {xla_s * 1e3:.0f} | "
          f"{loop_s * 1e3:.0f} |", flush=True)

  if FLAGS.step:
    name, width, size, k = model_step.configuration(FLAGS.step)
    setup = model_step.build(name, width, size, k, k if FLAGS.unroll == "full" else 1)
    times = {rows: [] for rows in FLAGS.step_rows}
    for _ in range(FLAGS.rounds):
      for rows in FLAGS.step_rows:
        conv._LOOP_MIN_ROWS = int(rows)   # pylint: disable=protected-access
        # A fresh function, traced with `rows`, compiled ahead as model_step.py does.
        step = setup.make_step(setup.model, True).lower(setup.state, setup.batch,
                                                        setup.rng_key).compile()
        holder = {"state": jax.tree.map(jnp.copy, setup.state)}   # the step donates its state

        def one_step(step=step, holder=holder):
          holder["state"], metrics = step(holder["state"], setup.batch, setup.rng_key)
          return metrics["loss"]
        times[rows].append(model_step.median_seconds(one_step, FLAGS.repeats))
        print(f"{rows} rows: {times[rows][-1]:.2f} s", file=sys.stderr, flush=True)
    conv._LOOP_MIN_ROWS = default_rows   # pylint: disable=protected-access
    print(f"\nwhole train step {name} width {width}, {size} px, K {k}, T {FLAGS.frames}, "
          f"{FLAGS.clips} clip(s); medians of {FLAGS.repeats} steps per round\n")
    print("| threshold (rows) | per round (s) |")
    print("| --- | --- |")
    for rows, values in times.items():
      print(f"| {rows} | {' / '.join(f'{v:.2f}' for v in values)} |")


if __name__ == "__main__":
  app.run(main)
