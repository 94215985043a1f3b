"""Convolution gradients on this machine: XLA's own against models/conv.py's, per layer shape.

  python benchmarks/conv_gradients.py                    # RED-Net v1's VGG-16 layers at 128 px
  python benchmarks/conv_gradients.py --patch_kib=512,2048,8192 --frames=10

For each 3x3 'SAME' layer of VGG-16 at --size px (T = --frames images, as one clip of a
RED-Net training step), times the forward convolution, the input gradient and the weight
gradient of XLA's `lax.conv_general_dilated` and of `models.conv` (canonical convolution for
the input gradient; chunked GEMMs for the weight gradient, one column per --patch_kib, the
size of the patch matrix built per chunk), outside and inside a rolled `lax.scan` (where XLA:CPU
does not repair its gradient convolutions; XLA's own timed once there). Medians of --repeats
calls; GFLOP/s = products x 2 N H W 9 Ci Co / time (forward, input and weight gradient are
products of the same size).
"""

import statistics
import time

from absl import app, flags

flags.DEFINE_integer("size", 128, "input size of the first layer (px)")
flags.DEFINE_integer("frames", 10, "images per batch (T frames of one clip)")
flags.DEFINE_float("width", 1.0, "channel multiplier of VGG-16")
flags.DEFINE_list("patch_kib", ["2048"], "models.conv patch-matrix sizes to try (KiB)")
flags.DEFINE_integer("repeats", 5, "timed calls per measurement (median)")
flags.DEFINE_bool("in_scan", True, "also time the gradients inside a rolled lax.scan")
FLAGS = flags.FLAGS

# (size divisor, in channels, out channels) of VGG-16's distinct 3x3 layer shapes.
LAYERS = ((1, 64, 64), (2, 128, 128), (4, 256, 256), (8, 512, 512), (16, 512, 512))


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp
  import numpy as np
  from jax import lax
  from rednet_jax.models import conv
  options = conv.cpu_compiler_options(jax.default_backend())   # as the project's programs

  numbers = ("NHWC", "HWIO", "NHWC")

  def timed(fn, *args, repeats=None):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats or FLAGS.repeats):
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times.append(time.perf_counter() - start)
    return statistics.median(times)

  def gradients(conv_fn, in_scan):
    def loss(x, w):
      if not in_scan:
        return (conv_fn(x, w) ** 2).sum()
      # Two iterations of a rolled loop, the same input: the loop is what matters.
      return lax.scan(lambda c, _: (c, (conv_fn(c, w) ** 2).sum()), x, None, length=2)[1].sum()
    return jax.jit(jax.grad(loss, argnums=(0, 1)), compiler_options=options)

  xla_conv = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                   dimension_numbers=numbers)
  ours_conv = lambda x, w: conv.conv_general_dilated(x, w, (1, 1), "SAME",
                                                     dimension_numbers=numbers)
  rng = np.random.default_rng(0)
  header = ["layer (N x H x W x Ci -> Co)", "GFLOP", "forward", "XLA grads"]
  header += [f"ours grads {k} KiB" for k in FLAGS.patch_kib]
  if FLAGS.in_scan:
    header += ["XLA grads in scan", f"ours grads in scan {FLAGS.patch_kib[0]} KiB"]
  print(f"\n{jax.devices()[0].device_kind}, times in ms (GFLOP/s of the products in brackets)\n")
  print("| " + " | ".join(header) + " |")
  print("|" + " --- |" * len(header))
  for divisor, ci, co in LAYERS:
    ci, co = max(1, round(ci * FLAGS.width)), max(1, round(co * FLAGS.width))
    side = FLAGS.size // divisor
    x = jnp.asarray(rng.normal(size=(FLAGS.frames, side, side, ci)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, ci, co)) * 0.05, jnp.float32)
    gflop = 2 * FLAGS.frames * side * side * 9 * ci * co / 1e9
    # Gradients are 2 products (dx, dw) plus the forward one inside the loss.
    cell = lambda seconds, products: f"{seconds * 1e3:.1f} ({products * gflop / seconds:.0f})"
    row = [f"{FLAGS.frames} x {side} x {side} x {ci} -> {co}", f"{gflop:.2f}",
           cell(timed(jax.jit(xla_conv, compiler_options=options), x, w), 1),
           cell(timed(gradients(xla_conv, False), x, w), 3)]
    default_bytes = conv._PATCH_BYTES   # pylint: disable=protected-access
    for kib in FLAGS.patch_kib:
      conv._PATCH_BYTES = int(kib) * 1024   # pylint: disable=protected-access
      row.append(cell(timed(gradients(ours_conv, False), x, w), 3))
    if FLAGS.in_scan:
      conv._PATCH_BYTES = int(FLAGS.patch_kib[0]) * 1024   # pylint: disable=protected-access
      # XLA's own in a loop takes tens of seconds per call: timed once (after the warm-up).
      row += [cell(timed(gradients(xla_conv, True), x, w, repeats=1), 6),
              cell(timed(gradients(ours_conv, True), x, w), 6)]
    conv._PATCH_BYTES = default_bytes   # pylint: disable=protected-access
    print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
  app.run(main)
