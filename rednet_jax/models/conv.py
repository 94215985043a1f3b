"""2-D convolution whose gradient XLA:CPU runs with its fast kernels.

XLA:CPU sends a convolution to its Eigen kernel only in canonical form (NHWC input, HWIO kernel,
no window reversal, no dilation). The gradients JAX derives are not canonical: the input
gradient reverses the kernel (and dilates the cotangent for strides > 1), the weight gradient
swaps the batch and feature dimensions of both operands. An XLA pass repairs them with
transposes, but only outside loops, so a convolution inside `lax.scan` / `nn.scan` trains with
XLA's naive loop kernel (jax issue #12868), and even repaired, the weight gradient is a
convolution with a huge kernel and a tiny output.

`conv_general_dilated` here keeps XLA's forward pass and, on CPU, computes the backward pass
from canonical pieces only:
- input gradient: the cotangent, zero-interleaved for strides > 1 (pads and reshapes), convolved
  with the kernel explicitly flipped and with its feature axes swapped (a forward, canonical
  convolution);
- weight gradient: matrix products of the shifted slices of the padded input with the
  cotangent, (kh kw Ci, rows) x (rows, Co), over chunks of rows small enough to stay in cache,
  on large maps; XLA's own on small ones (deep layers), where it is as fast outside loops.
The same function with the same values (`check_grads` in the tests); on GPU and TPU the
backward pass is XLA's own (`lax.platform_dependent`), where cuDNN and the TPU are fast already.

Use: `Conv(...)` is `nn.Conv` with this function (same parameters and names). Tracing a training
step inside `xla_conv_gradients()` gives XLA's gradient on every platform (the config's
`cpu_conv_gradients=False`, for comparisons).

`cpu_compiler_options` is the other half of the CPU path: the options every program the project
compiles for CPU is jitted with (train and eval steps, `LandmarkModel`, the benchmarks).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_CANONICAL = ("NHWC", "HWIO", "NHWC")
_use_canonical_on_cpu = True


@contextlib.contextmanager
def xla_conv_gradients():
  """Within this context, gradients traced are XLA's own on every platform. The switch is read
  when a gradient is traced, and `jax.jit` caches traces per function: trace a new function
  (as `make_train_step` does) rather than re-calling one traced outside the context."""
  global _use_canonical_on_cpu
  previous, _use_canonical_on_cpu = _use_canonical_on_cpu, False
  try:
    yield
  finally:
    _use_canonical_on_cpu = previous


# XLA:CPU's default runs convolutions, dots and some reductions as YNNPACK fusions; with the
# fusion list empty it runs them as its Eigen kernels and loop fusions, faster at this project's
# sizes (RED-Net v1 width 0.25, 64 px: forward -40 %, train step -7 %; width 1.0, 128 px:
# forward -11 %, train step equal; docs/engineering_notes.md).
_NO_YNN_FUSIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def cpu_compiler_options(platform: str, ynn_fusions: bool = False) -> dict[str, str]:
  """`compiler_options` for `jax.jit` of a program that runs on `platform` ('cpu', 'gpu',
  'tpu'): on CPU, XLA's own kernels instead of YNNPACK fusions unless `ynn_fusions` (the
  configs' `cpu_ynn_fusions`: XLA's default, for comparisons); elsewhere nothing."""
  return dict(_NO_YNN_FUSIONS) if platform == "cpu" and not ynn_fusions else {}


def _pads(padding, in_spatial, kernel_spatial, strides) -> tuple[tuple[int, int], ...]:
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(in_spatial, kernel_spatial, strides, padding))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def _xla_conv(x, w, strides, pads, precision):
  return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_CANONICAL,
                                  precision=precision)


def _xla_gradients(x, w, dy, strides, pads, precision):
  """(dx, dw) as XLA derives them."""
  return jax.vjp(lambda a, b: _xla_conv(a, b, strides, pads, precision), x, w)[1](dy)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, strides, pads, precision):
  return _xla_conv(x, w, strides, pads, precision)


def _conv_fwd(x, w, strides, pads, precision):
  return _xla_conv(x, w, strides, pads, precision), (x, w)


def _zero_interleave(dy: jax.Array, strides: tuple[int, int]) -> jax.Array:
  """(N, Ho, Wo, C) -> (N, (Ho-1) sh + 1, (Wo-1) sw + 1, C) with sh - 1 (sw - 1) zero rows
  (columns) between neighbours: the lhs dilation of XLA's input gradient, by pad + reshape."""
  sh, sw = strides
  if (sh, sw) == (1, 1):
    return dy
  n, ho, wo, c = dy.shape
  dy = jnp.pad(dy[:, :, None, :, None, :], ((0, 0), (0, 0), (0, sh - 1), (0, 0), (0, sw - 1),
                                             (0, 0)))
  return dy.reshape(n, ho * sh, wo * sw, c)[:, :(ho - 1) * sh + 1, :(wo - 1) * sw + 1]


# Rows of the weight gradient's patch matrix built per loop iteration: about 2 MB of patches,
# so they stay in cache (the whole im2col matrix of a 128 px layer is ~400 MB, and writing it
# costs XLA:CPU more than the GEMM; measured in benchmarks/conv_gradients.py).
_PATCH_BYTES = 2 ** 21
# The loop (per-image accumulators) pays from this many flat rows per image: from 48 x 48 maps
# up (weight gradient alone, XLA's against the loop: 10 x 48 x 48 x 256 -> 256 0.33 / 0.29 s,
# 16 x 64 x 64 x 512 -> 512 5.9 / 2.5 s, 10 x 128 x 128 x 64 -> 64 0.33 / 0.16 s). On 40 x 40
# maps and below XLA's own is faster (10 x 40 x 40 x 256: 0.18 / 0.22 s; 16 x 32 x 32 x 512:
# 0.68 / 0.87 s), and RED-Net's width-1.0 step is 8 % faster with its 32 x 32 layers there.
# Those figures are with XLA's YNNPACK fusions; without them (`cpu_compiler_options`) XLA's own
# wins outside loops on every map size, yet whole steps gain only ~3 % from it, while inside
# loops the loop is ~26x faster and a convolution cannot tell which case it is traced in:
# docs/engineering_notes.md.
_LOOP_MIN_ROWS = 2048


def _weight_gradient(x, w, dy, strides, pads, precision):
  """dw[i, j] = sum over n, h, w of xp[n, h s + i, w s + j] dy[n, h, w] as GEMMs over chunks.

  The cotangent is zero-interleaved to stride 1 and laid on the padded input's width Wp; then,
  per image, output (h, w) sits at flat row h Wp + w and its input (h + i, w + j) at that row
  plus i Wp + j, so each kernel tap is a contiguous row slice.

  Large maps (at least _LOOP_MIN_ROWS flat rows per image): a loop over chunks of rows builds the
  (N, R, kh kw Ci) patches of one chunk and accumulates their product with dy per image, summing the
  images after the loop: the loop holds no sum over the batch, which may be sharded, because a
  cross-device reduction inside a loop deadlocked XLA:CPU's multi-device runtime. A chunk has at
  least Co rows, so that rewriting the accumulators costs no more than building the patches (DRR's
  64 x 64 x 512 -> 512 layer at batch 16: 8-row chunks took 23 s, Co-row ones 4.0 s, XLA's own 29-33
  s). Smaller maps (below 48 x 48, the deep layers): XLA's own weight gradient, which XLA:CPU
  repairs outside loops and runs faster there (one GEMM over all the patches instead made RED-Net's
  128 px step slower, 18.6 s, and doubled its memory)."""
  kh, kw, ci, co = w.shape
  n = x.shape[0]
  (plh, phh), (plw, phw) = pads
  wp = x.shape[2] + plw + phw
  ho, wo = ((d - 1) * s + 1 for d, s in zip(dy.shape[1:3], strides))   # zero-interleaved
  rows = ho * wp                                     # flat rows holding the cotangent, per image
  if rows < _LOOP_MIN_ROWS:
    return _xla_gradients(x, w, dy, strides, pads, precision)[1]
  # At least Co rows per chunk: the per-image accumulators (N, kh kw Ci, Co) are read and
  # written once per chunk, Co / rows times the patches' bytes. Within that, about _PATCH_BYTES
  # of patches. The rows are split into equal chunks (the last one padded by less than one
  # row per chunk).
  chunks = -(-rows // max(co, _PATCH_BYTES // (4 * kh * kw * ci * n), 8))
  chunk = -(-rows // chunks)
  dy = jnp.pad(_zero_interleave(dy, strides),
               ((0, 0), (0, 0), (0, wp - wo), (0, 0))).reshape(n, rows, co)
  dy = jnp.pad(dy, ((0, 0), (0, chunks * chunk - rows), (0, 0)))
  taps = [i * wp + j for i in range(kh) for j in range(kw)]
  flat = jnp.pad(x, ((0, 0), (plh, phh), (plw, phw), (0, 0))).reshape(n, -1, ci)
  flat = jnp.pad(flat, ((0, 0), (0, max(0, chunks * chunk + taps[-1] - flat.shape[1])), (0, 0)))
  accumulator = jnp.promote_types(x.dtype, jnp.float32)   # bfloat16 inputs sum in float32

  def accumulate(c, dw):
    start = c * chunk
    patches = jnp.concatenate(
        [lax.dynamic_slice_in_dim(flat, start + t, chunk, axis=1) for t in taps], axis=2)
    cotangent = lax.dynamic_slice_in_dim(dy, start, chunk, axis=1)
    return dw + lax.dot_general(patches, cotangent, (((1,), (1,)), ((0,), (0,))),
                                precision=precision, preferred_element_type=accumulator)

  dw = lax.fori_loop(0, chunks, accumulate, jnp.zeros((n, kh * kw * ci, co), accumulator))
  return dw.sum(0).reshape(w.shape)


def canonical_conv_gradients(x, w, dy, strides, pads, precision=None):
  """(dx, dw) of `_xla_conv(x, w, strides, pads)` at cotangent `dy`, from a canonical forward
  convolution (dx) and GEMMs (dw)."""
  (kh, kw), (sh, sw) = w.shape[:2], strides
  (plh, phh), (plw, phw) = pads
  h, wd = x.shape[1:3]
  ho, wo = dy.shape[1:3]
  # Input rows the forward pass never reached (the last partial stride) get zero gradient.
  rest_h = h + plh + phh - kh - (ho - 1) * sh
  rest_w = wd + plw + phw - kw - (wo - 1) * sw
  # The scopes name the two halves in profiles (`benchmarks/step_profile.py`, xprof).
  with jax.named_scope("input_gradient"):
    flipped = jnp.swapaxes(w[::-1, ::-1], 2, 3)                      # (kh, kw, Co, Ci)
    dx = lax.conv_general_dilated(
        _zero_interleave(dy, strides), flipped, (1, 1),
        ((kh - 1 - plh, kh - 1 - phh + rest_h), (kw - 1 - plw, kw - 1 - phw + rest_w)),
        dimension_numbers=_CANONICAL, precision=precision)
  with jax.named_scope("weight_gradient"):
    dw = _weight_gradient(x, w, dy, strides, pads, precision)
  return dx.astype(x.dtype), dw.astype(w.dtype)


def _conv_bwd(strides, pads, precision, residuals, dy):
  x, w = residuals
  xla = functools.partial(_xla_gradients, strides=strides, pads=pads, precision=precision)
  if not _use_canonical_on_cpu:
    return xla(x, w, dy)
  canonical = functools.partial(canonical_conv_gradients, strides=strides, pads=pads,
                                precision=precision)
  return lax.platform_dependent(x, w, dy, cpu=canonical, default=xla)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                         precision=None, **unsupported):
  """`lax.conv_general_dilated` for what the models use (2-D, NHWC / HWIO, no dilation, one
  feature group), with the CPU-friendly gradient; anything else is refused, by name."""
  problems = []
  if lhs.ndim != 4 or rhs.ndim != 4:
    problems.append(f"2-D convolutions only (input {lhs.shape}, kernel {rhs.shape})")
  elif dimension_numbers is not None and not _is_canonical_numbers(dimension_numbers):
    problems.append(f"dimension_numbers {dimension_numbers} (NHWC, HWIO, NHWC only)")
  for name, dilation in (("lhs_dilation", lhs_dilation), ("rhs_dilation", rhs_dilation)):
    if dilation is not None and any(d != 1 for d in dilation):
      problems.append(f"{name} {tuple(dilation)}")
  pads = _pads(padding, lhs.shape[1:3], rhs.shape[:2], tuple(window_strides))
  if any(p < 0 for pair in pads for p in pair):
    problems.append(f"negative padding {pads}")
  if feature_group_count != 1:
    problems.append(f"feature_group_count {feature_group_count}")
  if unsupported:
    problems.append(f"arguments {sorted(unsupported)}")
  if problems:
    raise ValueError("conv.conv_general_dilated does not support " + "; ".join(problems))
  return _conv(lhs, rhs, tuple(int(s) for s in window_strides), pads, precision)


def _is_canonical_numbers(dimension_numbers) -> bool:
  shape = (1, 1, 1, 1)
  return (lax.conv_dimension_numbers(shape, shape, dimension_numbers)
          == lax.conv_dimension_numbers(shape, shape, _CANONICAL))


# nn.Conv with the CPU-friendly gradient: same fields, same parameters (kernel, bias).
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
