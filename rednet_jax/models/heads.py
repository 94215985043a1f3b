"""Modules attached to an encoder-decoder: temporal LSTM on the bottleneck, identity and shape heads.

Shared by every model family of the papers (RED-Net v1/v2 use all three; the others reuse parts).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rednet_jax.models.layers import ConvBNReLU, max_pool_with_argmax, scaled_channels

Dtype = Any
LSTMCarry = tuple[jax.Array, jax.Array]  # flax LSTM carry order: (cell c, hidden h)


def zero_lstm_carry(batch_shape: tuple[int, ...], hidden: int) -> LSTMCarry:
  zeros = jnp.zeros((*batch_shape, hidden), jnp.float32)
  return zeros, zeros


class TemporalLSTM(nn.Module):
  """RED-Net's f_tRNN: pool the pose/expression code to a vector (max-pool over the whole
  bottleneck, 4x4 at 128 px, keeping the argmax), run an LSTM over the T frames, project back to
  the code's channels and unpool at the recorded positions. The result replaces C_pe (paper);
  with `residual` it is added to C_pe instead, from a zero-initialised projection, so a model
  fine-tuned from the identity stage starts out computing exactly what that stage computed.

  code: (B, T, h, w, C); carry: (c, h) each (B, hidden). Returns (new code, new carry); the carry
  makes a long video processable in chunks with identical results.

  pooling='average' is RED-Net v2's f_trn: the code is average-pooled to a vector and the
  projected LSTM output is spread back over every position (upsampling a 1x1 map).
  """
  hidden: int = 256
  residual: bool = False
  pooling: str = "max_indexed"            # v1; 'average': v2

  @nn.compact
  def __call__(self, code: jax.Array, carry: LSTMCarry) -> tuple[jax.Array, LSTMCarry]:
    b, t, h, w, c = code.shape
    if self.pooling == "max_indexed":
      pooled, index = max_pool_with_argmax(code.reshape(b * t, h, w, c), (h, w))
    elif self.pooling == "average":
      pooled = code.mean(axis=(2, 3))
    else:
      raise ValueError(f"pooling must be 'max_indexed' or 'average', got {self.pooling!r}")
    sequence = pooled.reshape(b, t, c).astype(jnp.float32)
    lstm = nn.scan(nn.OptimizedLSTMCell, variable_broadcast="params",
                   split_rngs={"params": False}, in_axes=1, out_axes=1)
    carry, hidden_states = lstm(self.hidden, name="lstm")(carry, sequence)
    proj_init = nn.initializers.zeros if self.residual else nn.initializers.lecun_normal()
    update = nn.Dense(c, kernel_init=proj_init, name="proj")(hidden_states).astype(code.dtype)
    if self.pooling == "average":
      spread = jnp.broadcast_to(update[:, :, None, None], code.shape)
      return (code + spread if self.residual else spread), carry
    one_hot = jax.nn.one_hot(index.reshape(b, t, c), h * w, dtype=code.dtype)  # (B, T, C, hw)
    unpooled = (one_hot * update[..., None]).reshape(b, t, c, h, w).transpose(0, 1, 3, 4, 2)
    return (code + unpooled if self.residual else unpooled), carry


class IdentityHead(nn.Module):
  """f_CLS: average-pool C_id over space (4x4 at 128 px), dropout, dense to N identities.
  With `embedding` > 0 (v2: 256) a dense ReLU layer of that size comes before the dropout."""
  num_identities: int
  dropout_rate: float = 0.4
  embedding: int = 0

  @nn.compact
  def __call__(self, identity_code: jax.Array, train: bool) -> jax.Array:
    x = jnp.mean(identity_code.astype(jnp.float32), axis=(-3, -2))
    if self.embedding:
      x = nn.relu(nn.Dense(self.embedding, name="embedding")(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_identities, name="logits")(x)


class ShapeRegressionHead(nn.Module):
  """f_REG: response map -> 2L coordinates relative to the mean shape.

  Five conv stages with 64-64-256-256-512 maps (x width), each followed by a 2x2 max-pool except
  the last, which is pooled over its whole extent (8x8 at 128 px) to one vector; dropout, dense.
  Encoder features enter by concatenation at the stage running at their resolution (conv2_2 at
  H/2 before stage 2, conv4_3 at H/8 before stage 4) through stop_gradient: the f_REG loss does
  not change the encoder. Output (..., L, 2) in units of the input size.
  """
  num_landmarks: int
  width: float = 1.0
  dropout_rate: float = 0.4
  bn_momentum: float = 0.99
  dtype: Dtype = jnp.float32
  stages: tuple[int, ...] = (64, 64, 256, 256, 512)
  # Encoder feature concatenated before stage i (0-based).
  injections: tuple[tuple[int, str], ...] = ((1, "conv2_2"), (3, "conv4_3"))

  @nn.compact
  def __call__(self, response: jax.Array, encoder_features: dict[str, jax.Array],
               train: bool) -> jax.Array:
    inject = dict(self.injections)
    x = response.astype(self.dtype)
    for i, channels in enumerate(self.stages):
      if i in inject:
        feature = jax.lax.stop_gradient(encoder_features[inject[i]]).astype(self.dtype)
        if feature.shape[:-1] != x.shape[:-1]:
          raise ValueError(f"f_REG stage {i}: {inject[i]} has shape {feature.shape}, "
                           f"stage input {x.shape}")
        x = jnp.concatenate([x, feature], axis=-1)
      x = ConvBNReLU(scaled_channels(channels, self.width), bn_momentum=self.bn_momentum,
                     dtype=self.dtype, name=f"conv{i + 1}")(x, train)
      if i < len(self.stages) - 1:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = jnp.max(x, axis=(-3, -2)).astype(jnp.float32)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    # Gaussian init (paper) with a small std: the first predictions sit near the mean shape
    # instead of O(1) image sizes away, which made early f_REG losses diverge at lr 0.01.
    x = nn.Dense(2 * self.num_landmarks, kernel_init=nn.initializers.normal(1e-3),
                 name="coords")(x)
    return x.reshape(*x.shape[:-1], self.num_landmarks, 2)
