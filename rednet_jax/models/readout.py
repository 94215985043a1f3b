"""Landmarks read out of response maps (inside the jitted model; not differentiable)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rednet_jax.models.targets import pixel_grid


def landmarks_from_response(logits: jax.Array, fallback: jax.Array) -> jax.Array:
  """RED-Net's f_sRNN read-out: per-pixel argmax over the L+1 channels, then the centre of mass
  of each landmark's cluster of pixels.

  logits: (..., H, W, L+1); fallback: (..., L, 2) used for a landmark that wins no pixel (the
  paper is silent; keeping the previous estimate leaves that landmark where the feedback put it).
  Returns (..., L, 2) float32 (x, y). Not differentiable (argmax); callers stop gradients.
  """
  *lead, h, w, channels = logits.shape
  num_points = channels - 1
  labels = jnp.argmax(logits, axis=-1).reshape(-1, h * w)                   # (n, HW)
  n = labels.shape[0]
  segments = (labels + jnp.arange(n)[:, None] * channels).reshape(-1)
  ys, xs = jnp.divmod(jnp.arange(h * w), w)
  coords = jnp.stack([xs, ys, jnp.ones_like(xs)], axis=-1).astype(jnp.float32)  # (HW, 3)
  sums = jax.ops.segment_sum(jnp.tile(coords, (n, 1)), segments, num_segments=n * channels)
  sums = sums.reshape(n, channels, 3)[:, 1:]                                 # drop background
  count = sums[..., 2:]
  centres = sums[..., :2] / jnp.maximum(count, 1.0)
  fallback = fallback.reshape(n, num_points, 2).astype(jnp.float32)
  centres = jnp.where(count > 0, centres, fallback)
  return centres.reshape(*lead, num_points, 2)


READOUTS = ("cluster_centroid", "probability_centroid")


def landmarks_from_probabilities(logits: jax.Array, fallback: jax.Array, window: int
                                 ) -> jax.Array:
  """Sub-pixel read-out: each landmark's softmax probability map, restricted to a `window` x
  `window` square around the paper's cluster centre (`landmarks_from_response`), less its
  minimum there, weighted centroid. The cluster centre alone moves in steps of 1/(cluster size) px as pixels change
  side; the probabilities move smoothly with the face. A landmark with no probability mass in
  its window keeps the cluster centre. Same shapes as `landmarks_from_response`."""
  if window < 1 or window % 2 == 0:
    raise ValueError(f"read-out window must be a positive odd number of pixels, got {window}")
  start = landmarks_from_response(logits, fallback)                          # (..., L, 2)
  probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., 1:]  # (..., H, W, L)
  h, w = logits.shape[-3:-1]
  xs, ys = pixel_grid((h, w))
  centre = jnp.round(start)
  r = window // 2
  in_x = jnp.abs(xs[..., None] - centre[..., None, None, :, 0]) <= r        # (..., 1, W, L)
  in_y = jnp.abs(ys[..., None] - centre[..., None, None, :, 1]) <= r        # (..., H, 1, L)
  inside = in_x & in_y
  # Measured from the lowest probability in the window, so a floor of probability spread
  # over the window does not pull the centroid towards the window's centre.
  floor = jnp.min(jnp.where(inside, probabilities, jnp.inf), axis=(-3, -2), keepdims=True)
  weights = jnp.where(inside, probabilities - floor, 0.0)
  total = weights.sum(axis=(-3, -2))                                         # (..., L)
  x = (weights * xs[..., None]).sum(axis=(-3, -2)) / jnp.maximum(total, 1e-12)
  y = (weights * ys[..., None]).sum(axis=(-3, -2)) / jnp.maximum(total, 1e-12)
  refined = jnp.stack([x, y], axis=-1)
  return jnp.where(total[..., None] > 1e-6, refined, start)


def read_landmarks(logits: jax.Array, fallback: jax.Array, readout: str = "cluster_centroid",
                   window: int = 7) -> jax.Array:
  """Landmarks from response logits with the named read-out (`READOUTS`): the paper's
  'cluster_centroid' or the sub-pixel 'probability_centroid'."""
  if readout == "cluster_centroid":
    return landmarks_from_response(logits, fallback)
  if readout == "probability_centroid":
    return landmarks_from_probabilities(logits, fallback, window)
  raise ValueError(f"read-out must be one of {READOUTS}, got {readout!r}")
