"""RED-Net v1 training losses (paper Eqs. 4, 6, 7, 8), with targets rendered on the device.

Reductions follow the paper: the pixel cross-entropy is summed over the K spatial steps (Eq. 4)
and over the T frames of a clip (Eq. 6); within one response map it is averaged over pixels.
Each term is computed per clip and averaged over the (valid) clips of the batch, so the learning
rate does not depend on the image size or the batch size.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from rednet_jax.models.targets import render_label_map


def response_map_loss(logits: jax.Array, landmarks: jax.Array, target_square: int) -> jax.Array:
  """(L+1)-way pixel-wise softmax cross-entropy against the ground-truth label map, averaged
  over pixels, summed over K steps and T frames; one value per clip (B,).

  logits (K, B, T, H, W, L+1); landmarks (B, T, L, 2). The ground truth marks each landmark with
  a `target_square` block (the paper does not give its size; it is a config field).
  """
  target = render_label_map(landmarks, logits.shape[-3:-1], target_square)     # (B, T, H, W)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, target[None])    # (K, B, T, H, W)
  return ce.mean(axis=(-2, -1)).sum(axis=(0, 2))


def _clip_mean(per_clip: jax.Array, clip_weights: jax.Array | None) -> jax.Array:
  if clip_weights is None:
    return per_clip.mean()
  return jnp.sum(per_clip * clip_weights) / jnp.maximum(jnp.sum(clip_weights), 1.0)


def shape_regression_loss(residual: jax.Array, landmarks: jax.Array, mean_shape: jax.Array,
                          size: tuple[int, int]) -> jax.Array:
  """Euclidean loss of f_REG on coordinates minus the mean shape, in units of the input
  (width, height): per landmark the squared distance, summed over landmarks and frames; one
  value per clip (B,)."""
  target = (landmarks - mean_shape) / jnp.asarray(size, jnp.float32)
  return jnp.sum((residual - target) ** 2, axis=(-1, -2, -3))                  # (B,)


def identity_loss(identity_logits: jax.Array, identities: jax.Array) -> jax.Array:
  """Softmax cross-entropy of f_CLS, one identity per clip, summed over frames; (B,)."""
  labels = jnp.broadcast_to(identities[:, None], identity_logits.shape[:2])
  return optax.softmax_cross_entropy_with_integer_labels(identity_logits, labels).sum(-1)  # (B,)


def rednet_v1_loss(outputs: dict[str, Any], batch: dict[str, jax.Array], mean_shape: jax.Array,
                   target_square: int, weights: dict[str, float],
                   clip_weights: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """Weighted sum of the terms present in `outputs`; returns (total, per-term dict).

  `clip_weights` (B,) masks clips (e.g. the loaders' `valid`): terms average over the clips
  with weight 1 instead of all clips."""
  landmarks = batch["landmarks"]
  per_clip = {"response": response_map_loss(outputs["logits"], landmarks, target_square)}
  if "shape_residual" in outputs:
    h, w = outputs["logits"].shape[-3:-1]
    per_clip["shape"] = shape_regression_loss(outputs["shape_residual"], landmarks, mean_shape,
                                              (w, h))
  if "identity_logits" in outputs:
    # Clips with an unknown identity (-1) carry no identity loss.
    known = batch["identity"] >= 0
    per_clip["identity"] = jnp.where(
        known, identity_loss(outputs["identity_logits"], jnp.maximum(batch["identity"], 0)), 0.0)
  terms = {name: _clip_mean(value, clip_weights) for name, value in per_clip.items()}
  total = sum(weights.get(name, 1.0) * value for name, value in terms.items())
  return total, terms
