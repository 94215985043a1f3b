"""Training losses of RED-Net v1 (ECCV 2016, Eqs. 4, 6, 7, 8) and v2 (IJCV 2018, Eqs. 5, 7, 14),
with targets rendered on the device.

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

from rednet_jax.models.system import clip_mean
from rednet_jax.models.targets import (render_disks, render_gaussian_heatmaps, render_label_map,
                                       to_map_pixels)


def response_map_loss(logits: jax.Array, landmarks: jax.Array, target_square: int) -> jax.Array:
  """(L+1)-way pixel-wise softmax cross-entropy against the ground-truth label map, averaged
  over pixels, summed over K steps and T frames; one value per clip (B,).

  logits (K, B, T, H, W, L+1); landmarks (B, T, L, 2). The ground truth marks each landmark with
  a `target_square` block (the paper does not give its size; it is a config field).
  """
  target = render_label_map(landmarks, logits.shape[-3:-1], target_square)     # (B, T, H, W)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, target[None])    # (K, B, T, H, W)
  return ce.mean(axis=(-2, -1)).sum(axis=(0, 2))


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


def _weighted_total(per_clip: dict[str, jax.Array], outputs: dict[str, Any],
                    batch: dict[str, jax.Array], weights: dict[str, float],
                    clip_weights: jax.Array | None) -> tuple[jax.Array, dict]:
  """Adds f_CLS's term when the outputs have identity logits, averages every per-clip term over
  the (valid) clips and returns (weighted total, terms)."""
  if "identity_logits" in outputs:
    # Clips with an unknown identity (-1) carry no identity loss.
    known = batch["identity"] >= 0
    per_clip["identity"] = jnp.where(
        known, identity_loss(outputs["identity_logits"], jnp.maximum(batch["identity"], 0)), 0.0)
  terms = {name: clip_mean(value, clip_weights) for name, value in per_clip.items()}
  total = sum(weights.get(name, 1.0) * value for name, value in terms.items())
  return total, terms


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
  return _weighted_total(per_clip, outputs, batch, weights, clip_weights)


def weighted_pixel_mean(per_pixel: jax.Array, foreground: jax.Array, foreground_weight: float,
                        from_ratio: bool) -> jax.Array:
  """Mean over (H, W, C) of a per-pixel loss (..., H, W, C) with foreground pixels weighted:
  by `foreground_weight` (RED-Net v2 paper: 15), or, with `from_ratio`, by each map's
  background / foreground pixel count (the authors' released code)."""
  if from_ratio:
    count = foreground.sum(axis=(-3, -2), keepdims=True)
    size = foreground.shape[-3] * foreground.shape[-2]
    weight = jnp.where(count > 0, (size - count) / jnp.maximum(count, 1.0), 1.0)
  else:
    weight = foreground_weight
  weights = jnp.where(foreground, weight, 1.0)
  return (weights * per_pixel).mean(axis=(-3, -2, -1))


def rednet_v2_loss(outputs: dict[str, Any], batch: dict[str, jax.Array], steps: tuple[str, ...],
                   major: tuple[int, ...], disk_radius: float, gaussian_sigma: float,
                   gaussian_peak: float, foreground_weight: float,
                   foreground_weight_from_ratio: bool, weights: dict[str, float],
                   clip_weights: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """l_det + lambda l_reg + gamma l_cls (Eq. 14), each summed over the steps of its kind and the
  T frames, averaged over (valid) clips. Detection: pixel-wise sigmoid cross-entropy of the 7
  maps against binary disks of `disk_radius` around the major landmarks (Eq. 5). Regression:
  pixel-wise squared error of the L maps against Gaussians of `gaussian_sigma` and peak
  `gaussian_peak` (Eq. 7). Both weight foreground pixels (inside the disk) up. Radii and sigma
  are in response-map pixels; the maps are at half the input resolution."""
  detection, regression = outputs["detection_logits"], outputs["regression_maps"]
  size = detection.shape[-3:-1]
  landmarks = to_map_pixels(batch["landmarks"].astype(jnp.float32))          # (B, T, L, 2)
  per_clip = {}
  kinds = [i for i, s in enumerate(steps) if s == "detection"]
  if kinds:
    disks = render_disks(landmarks[..., jnp.asarray(major), :], size, disk_radius)
    logits = detection[jnp.asarray(kinds)]                                    # (k, B, T, h, w, 7)
    ce = optax.sigmoid_binary_cross_entropy(logits, disks[None])
    per_clip["detection"] = weighted_pixel_mean(
        ce, disks[None] > 0, foreground_weight, foreground_weight_from_ratio).sum(axis=(0, 2))
  kinds = [i for i, s in enumerate(steps) if s == "regression"]
  if kinds:
    target = render_gaussian_heatmaps(landmarks, size, gaussian_sigma, gaussian_peak)
    foreground = render_disks(landmarks, size, disk_radius) > 0
    error = (regression[jnp.asarray(kinds)] - target[None]) ** 2
    per_clip["regression"] = weighted_pixel_mean(
        error, foreground[None], foreground_weight, foreground_weight_from_ratio).sum(axis=(0, 2))
  return _weighted_total(per_clip, outputs, batch, weights, clip_weights)
