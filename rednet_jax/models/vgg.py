"""The VGG-16 encoder with indexed pooling and its mirrored decoder (RED-Net v1 and v2's VGG
variant)."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rednet_jax.models.conv import Conv
from rednet_jax.models.layers import (ConvBNReLU, max_pool_with_argmax, scaled_channels,
                                      unpool_with_argmax)

Dtype = Any

# VGG-16 convolution stages (channels per conv); a pool follows every stage.
VGG16_STAGES: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256),
                                             (512, 512, 512), (512, 512, 512))
# VGG-19's (torchvision `vgg19`): DRR's conv-deconv backbone keeps only the first two pools.
VGG19_STAGES: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256,) * 4, (512,) * 4,
                                             (512,) * 4)


class VGG16Encoder(nn.Module):
  """The 13 convolutions of VGG-16, BN + ReLU after each, 5 indexed 2x2 max-pools.

  Layer names follow VGG (`conv1_1` ... `conv5_3`) so ImageNet weights map one-to-one
  (see `rednet_jax.models.pretrained`). Returns the bottleneck (H/32, W/32, 512*width), the pooling
  indices of the 5 pools (shallow first) and the features named in `keep` (before pooling).
  """
  width: float = 1.0
  bn_momentum: float = 0.99
  dtype: Dtype = jnp.float32
  keep: Sequence[str] = ("conv2_2", "conv4_3")

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, after_first_stage: jax.Array | None = None):
    """`after_first_stage` (optional) is added to the first stage's pooled output (RED-Net v2's
    'stem_add' feedback)."""
    indices, kept = [], {}
    for stage, stage_channels in enumerate(VGG16_STAGES, start=1):
      for layer, channels in enumerate(stage_channels, start=1):
        name = f"conv{stage}_{layer}"
        x = ConvBNReLU(scaled_channels(channels, self.width), bn_momentum=self.bn_momentum,
                       dtype=self.dtype, name=name)(x, train)
        if name in self.keep:
          kept[name] = x
      x, index = max_pool_with_argmax(x)
      indices.append(index)
      if stage == 1 and after_first_stage is not None:
        x = x + after_first_stage.astype(x.dtype)
    return x, indices, kept


class VGG16Decoder(nn.Module):
  """Mirror of `VGG16Encoder`: indexed unpooling before each stage, BN + ReLU after each conv.

  The last convolution of the mirrored stage 1 outputs `out_channels` logits with no BN/ReLU
  (a rectified logit could not express "unlikely"); every other conv mirrors the encoder with
  the channel count of the layer it mirrors, e.g. stage 4 runs 512, 512, 256.
  """
  out_channels: int
  width: float = 1.0
  bn_momentum: float = 0.99
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, indices: Sequence[jax.Array], train: bool) -> jax.Array:
    for stage in range(len(VGG16_STAGES), 0, -1):
      x = unpool_with_argmax(x, indices[stage - 1])
      stage_channels = VGG16_STAGES[stage - 1]
      n = len(stage_channels)
      # Mirrored conv j outputs the channel count of the encoder layer feeding the mirrored one.
      outputs = list(stage_channels[:-1][::-1]) + [VGG16_STAGES[stage - 2][-1] if stage > 1 else None]
      for layer, channels in zip(range(n, 0, -1), outputs):
        name = f"deconv{stage}_{layer}"
        if channels is None:
          x = Conv(self.out_channels, (3, 3), padding="SAME", dtype=self.dtype,
                   name=name)(x)
        else:
          x = ConvBNReLU(scaled_channels(channels, self.width), bn_momentum=self.bn_momentum,
                         dtype=self.dtype, name=name)(x, train)
    return x


# RED-Net v2's VGG decoder B4..B1 (Table 1: 3 x 512, 3 x 512, 3 x 256, 2 x 128), unpooling
# before each block; the last conv of B3 and B2 narrows to the width of the encoder stage whose
# pooling indices the next block unpools with (256, 128), as the paper's mirrored design needs.
VGG_V2_DECODER_STAGES: tuple[tuple[int, ...], ...] = ((512, 512, 512), (512, 512, 256),
                                                      (256, 256, 128), (128, 128))


class UnpoolingDecoder(nn.Module):
  """Blocks of (indexed unpooling, 3x3 convs with BN + ReLU), one per entry of `stages`, using
  the encoder's pooling indices deepest first. RED-Net v2's B4..B1 stop at half the input
  resolution (four unpoolings after VGG-16's five pools); the per-task 1x1 heads follow."""
  stages: tuple[tuple[int, ...], ...] = VGG_V2_DECODER_STAGES
  width: float = 1.0
  bn_momentum: float = 0.99
  dtype: Dtype = jnp.float32
  out_channels: int = 0          # the last conv's width; 0: the last stage's x width

  @nn.compact
  def __call__(self, x: jax.Array, indices: Sequence[jax.Array], train: bool) -> jax.Array:
    for block, stage_channels in enumerate(self.stages):
      x = unpool_with_argmax(x, indices[len(indices) - 1 - block])
      for layer, channels in enumerate(stage_channels, 1):
        last = block == len(self.stages) - 1 and layer == len(stage_channels)
        conv_width = (self.out_channels if last and self.out_channels
                      else scaled_channels(channels, self.width))
        x = ConvBNReLU(conv_width, bn_momentum=self.bn_momentum,
                       dtype=self.dtype, name=f"b{len(self.stages) - block}_conv{layer}")(x, train)
    return x
