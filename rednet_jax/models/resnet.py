"""The ResNet encoder-decoder of RED-Net v2 (IJCV 2018, Tables 2-3): a deep bottleneck ResNet
encoder, a shallow decoder of 2x2/2 deconvolutions, and skip branches added to the decoder.

Resolutions for a 256-px input (Table 2): C0 7x7/2 conv -> 128; C1..C4 bottleneck blocks with
outputs at 64, 32, 16, 8 px (widths 256, 512, 1024, 2048); D4..D1 each a 2x2/2 deconvolution
plus a 1x1 convolution (512/1024, 256/512, 128/256, 64/128) back up to 128 px; E3, E2, E1 three
constant-width bottleneck units each on C3, C2, C1's outputs, added to D4, D3, D2's outputs.

Choice where the paper is loose: it halves the resolution "at the end of each block" with
stride-2 convolutions and no pooling; here the stride sits in the first unit of each block (its
3x3 convolution and projection shortcut), as in torchvision's ResNets, so ImageNet weights map
one-to-one (`pretrained.load_torchvision_resnet`) and block outputs have the table's sizes. C1
thus strides where torchvision has a max-pool. Convolutions followed by BatchNorm have no bias.
Layer names follow torchvision (`layer1.0.conv1` -> `block1_unit0/conv1`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rednet_jax.models.conv import Conv
from rednet_jax.models.layers import scaled_channels

Dtype = Any

# Bottleneck units per block C1..C4.
RESNET_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
BLOCK_WIDTHS = (64, 128, 256, 512)         # inner width of C1..C4; outputs are 4x


def _conv(features: int, kernel: int, stride: int, dtype: Dtype, name: str) -> nn.Module:
  return Conv(features, (kernel, kernel), strides=(stride, stride),
              padding=[(kernel // 2, kernel // 2)] * 2 if kernel > 1 else "VALID",
              use_bias=False, dtype=dtype, kernel_init=nn.initializers.he_normal(), name=name)


def _bn(train: bool, momentum: float, dtype: Dtype, name: str):
  return nn.BatchNorm(use_running_average=not train, momentum=momentum, dtype=dtype, name=name)


class Bottleneck(nn.Module):
  """1x1 (inner) -> 3x3 (inner, stride) -> 1x1 (4 x inner), BN after each, ReLU after the sum;
  a 1x1 projection shortcut when the shape changes."""
  inner: int
  stride: int = 1
  bn_momentum: float = 0.9
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    out_channels = 4 * self.inner
    y = nn.relu(_bn(train, self.bn_momentum, self.dtype, "bn1")(
        _conv(self.inner, 1, 1, self.dtype, "conv1")(x)))
    y = nn.relu(_bn(train, self.bn_momentum, self.dtype, "bn2")(
        _conv(self.inner, 3, self.stride, self.dtype, "conv2")(y)))
    y = _bn(train, self.bn_momentum, self.dtype, "bn3")(
        _conv(out_channels, 1, 1, self.dtype, "conv3")(y))
    if self.stride != 1 or x.shape[-1] != out_channels:
      x = _bn(train, self.bn_momentum, self.dtype, "downsample_bn")(
          _conv(out_channels, 1, self.stride, self.dtype, "downsample_conv")(x))
    return nn.relu(x + y)


class ResNetStem(nn.Module):
  """C0: 7x7/2 convolution (64 x width), BN, ReLU: the input at half resolution."""
  width: float = 1.0
  bn_momentum: float = 0.9
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = _conv(scaled_channels(64, self.width), 7, 2, self.dtype, "conv1")(x)
    return nn.relu(_bn(train, self.bn_momentum, self.dtype, "bn1")(x))


class ResNetEncoder(nn.Module):
  """C1..C4 on the stem's output: returns the bottleneck (C4) and the outputs of C1, C2, C3
  (what the skip branches E1, E2, E3 read)."""
  depth: int = 152
  width: float = 1.0
  bn_momentum: float = 0.9
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, list[jax.Array]]:
    if self.depth not in RESNET_DEPTHS:
      raise ValueError(f"ResNet depth must be one of {sorted(RESNET_DEPTHS)}, got {self.depth}")
    outputs = []
    for block, (units, inner) in enumerate(zip(RESNET_DEPTHS[self.depth], BLOCK_WIDTHS), 1):
      for unit in range(units):
        x = Bottleneck(scaled_channels(inner, self.width), 2 if unit == 0 else 1,
                       self.bn_momentum, self.dtype, name=f"block{block}_unit{unit}")(x, train)
      outputs.append(x)
    return x, outputs[:3]


class ResNetDecoder(nn.Module):
  """D4..D1 (2x2/2 deconvolution + 1x1 convolution, BN + ReLU after each) with the skip branches
  E3, E2, E1 (three constant-width bottleneck units each) added to D4, D3, D2's outputs. Returns
  the 128-channel (x width, or `out_channels`) features at the stem's resolution; the per-task
  1x1 heads follow."""
  width: float = 1.0
  bn_momentum: float = 0.9
  dtype: Dtype = jnp.float32
  skip_units: int = 3
  out_channels: int = 0          # D1's output width; 0: 128 x width (Table 2)

  @nn.compact
  def __call__(self, code: jax.Array, skips: list[jax.Array], train: bool) -> jax.Array:
    x = code
    # (deconvolution, 1x1) widths of D4..D1 (Table 2).
    for level, (up, out) in zip((4, 3, 2, 1), ((512, 1024), (256, 512), (128, 256), (64, 128))):
      x = nn.ConvTranspose(scaled_channels(up, self.width), (2, 2), strides=(2, 2),
                           use_bias=False, dtype=self.dtype, name=f"d{level}_deconv")(x)
      x = nn.relu(_bn(train, self.bn_momentum, self.dtype, f"d{level}_deconv_bn")(x))
      conv_width = (self.out_channels if level == 1 and self.out_channels
                    else scaled_channels(out, self.width))
      x = _conv(conv_width, 1, 1, self.dtype, f"d{level}_conv")(x)
      x = nn.relu(_bn(train, self.bn_momentum, self.dtype, f"d{level}_conv_bn")(x))
      if level > 1:                       # E_{level-1} bridges C_{level-1} into D_level
        skip = skips[level - 2]
        for unit in range(self.skip_units):
          skip = Bottleneck(skip.shape[-1] // 4, 1, self.bn_momentum, self.dtype,
                            name=f"e{level - 1}_unit{unit}")(skip, train)
        if skip.shape != x.shape:
          raise ValueError(f"skip E{level - 1} {skip.shape} does not match D{level} {x.shape}")
        x = x + skip
    return x
