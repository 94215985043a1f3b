"""Layers shared by the models: indexed pooling, conv-BN-ReLU, channel scaling.

Tensors are NHWC. Pooling indices are the position of the maximum inside its window, row-major
(for 2x2: 0 = top-left, 1 = top-right, 2 = bottom-left, 3 = bottom-right); ties resolve to the
lowest index, like `np.argmax`. These are the "2-bit switches" of RED-Net / SegNet.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rednet_jax.models.conv import Conv

Dtype = Any

def scaled_channels(channels: int, width: float) -> int:
  """Channel count under a width multiplier (1.0 = the paper)."""
  return max(1, int(round(channels * width)))


def first_argmax(x: jax.Array) -> jax.Array:
  """jnp.argmax over the last axis (the first index of the maximum) as a max and a min over the
  indices that reach it: XLA:CPU runs argmax's paired (value, index) reduction one element at a
  time, these two vectorise (a 96 x 96 x 69 response: 2.6 -> 0.8 ms). A row with a NaN gives a
  channel in range (where XLA's max skips NaNs, the largest other value's; else 0), where
  argmax gives the NaN's index."""
  channel = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
  top = jnp.max(x, axis=-1, keepdims=True)
  index = jnp.min(jnp.where(x == top, channel, x.shape[-1]), axis=-1)
  return jnp.where(index < x.shape[-1], index, 0)


def _to_windows(x: jax.Array, window: tuple[int, int]) -> jax.Array:
  """(B, H, W, C) -> (B, H/wh, W/ww, C, wh*ww), window elements in row-major order."""
  b, h, w, c = x.shape
  wh, ww = window
  if h % wh or w % ww:
    raise ValueError(f"spatial shape {(h, w)} is not divisible by the pooling window {window}")
  x = x.reshape(b, h // wh, wh, w // ww, ww, c)
  x = x.transpose(0, 1, 3, 5, 2, 4)
  return x.reshape(b, h // wh, w // ww, c, wh * ww)


def _from_windows(x: jax.Array, window: tuple[int, int]) -> jax.Array:
  """Inverse of `_to_windows`."""
  b, hp, wp, c, _ = x.shape
  wh, ww = window
  x = x.reshape(b, hp, wp, c, wh, ww)
  x = x.transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(b, hp * wh, wp * ww, c)


def max_pool_with_argmax(x: jax.Array, window: tuple[int, int] = (2, 2)
                         ) -> tuple[jax.Array, jax.Array]:
  """Non-overlapping max pooling (stride = window) that also returns the argmax of each window.

  Returns (pooled, indices); indices are int8 in [0, wh*ww) when they fit, else int32. The
  gradient reaches exactly one input per window (the recorded argmax), matching the unpooling.
  """
  windows = _to_windows(x, window)
  index = first_argmax(windows)
  # A select rather than take_along_axis, so the gradient is elementwise instead of a scatter.
  chosen = jax.nn.one_hot(index, window[0] * window[1], dtype=jnp.bool_)
  pooled = jnp.where(chosen, windows, jnp.zeros((), x.dtype)).sum(axis=-1)
  index_dtype = jnp.int8 if window[0] * window[1] <= 127 else jnp.int32
  return pooled, index.astype(index_dtype)


def unpool_with_argmax(x: jax.Array, indices: jax.Array,
                       window: tuple[int, int] = (2, 2)) -> jax.Array:
  """Puts each value of `x` back at its recorded position inside a window; zeros elsewhere."""
  if x.shape != indices.shape:
    raise ValueError(f"unpool: values {x.shape} and indices {indices.shape} differ in shape")
  one_hot = jax.nn.one_hot(indices, window[0] * window[1], dtype=x.dtype)
  return _from_windows(one_hot * x[..., None], window)


class ConvBNReLU(nn.Module):
  """3x3 convolution, BatchNorm, ReLU: the unit after which RED-Net places BN + ReLU
  (`batch_norm=False`: convolution and ReLU only, as in VGG without BN)."""
  features: int
  kernel_size: tuple[int, int] = (3, 3)
  bn_momentum: float = 0.99
  dtype: Dtype = jnp.float32
  batch_norm: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = Conv(self.features, self.kernel_size, padding="SAME", dtype=self.dtype,
             kernel_init=nn.initializers.he_normal(), name="conv")(x)
    if self.batch_norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                       dtype=self.dtype, name="bn")(x)
    return nn.relu(x)
