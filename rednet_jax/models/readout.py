"""Landmarks read out of response maps (inside the jitted model; not differentiable)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rednet_jax.models.layers import first_argmax
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
  labels = first_argmax(logits).reshape(-1, h * w)                          # (n, HW)
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
  start = landmarks_from_response(logits, fallback)                          # (..., L, 2)
  probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., 1:]  # (..., H, W, L)
  return windowed_centroid(probabilities, start, window)


def _in_window(size: tuple[int, int], centre: jax.Array, window: int) -> jax.Array:
  """(..., H, W, C) mask of the `window` x `window` square around each channel's rounded
  centre (..., C, 2)."""
  xs, ys = pixel_grid(size)
  centre = jnp.round(centre)
  r = window // 2
  in_x = jnp.abs(xs[..., None] - centre[..., None, None, :, 0]) <= r        # (..., 1, W, C)
  in_y = jnp.abs(ys[..., None] - centre[..., None, None, :, 1]) <= r        # (..., H, 1, C)
  return in_x & in_y


def windowed_centroid(maps: jax.Array, centre: jax.Array, window: int) -> jax.Array:
  """Sub-pixel position of each channel of `maps` (..., H, W, C): the centroid of the map, less
  its minimum there, in the `window` x `window` square around `centre` (..., C, 2) (rounded).
  Measured from the window's minimum so that a floor spread over the window does not pull the
  centroid to the window's centre. A channel with no mass in its window keeps `centre`."""
  if window < 1 or window % 2 == 0:
    raise ValueError(f"read-out window must be a positive odd number of pixels, got {window}")
  size = maps.shape[-3:-1]
  xs, ys = pixel_grid(size)
  inside = _in_window(size, centre, window)
  maps = maps.astype(jnp.float32)
  floor = jnp.min(jnp.where(inside, maps, jnp.inf), axis=(-3, -2), keepdims=True)
  weights = jnp.where(inside, maps - floor, 0.0)
  total = weights.sum(axis=(-3, -2))                                         # (..., C)
  x = (weights * xs[..., None]).sum(axis=(-3, -2)) / jnp.maximum(total, 1e-12)
  y = (weights * ys[..., None]).sum(axis=(-3, -2)) / jnp.maximum(total, 1e-12)
  refined = jnp.stack([x, y], axis=-1)
  return jnp.where(total[..., None] > 1e-6, refined, centre.astype(jnp.float32))


def peak_positions(maps: jax.Array, around: jax.Array | None = None, search_window: int = 0
                   ) -> jax.Array:
  """Integer (x, y) of each channel's maximum in `maps` (..., H, W, C), searched in the
  `search_window` square around `around` (..., C, 2) when search_window > 0, else anywhere."""
  size = maps.shape[-3:-1]
  maps = maps.astype(jnp.float32)
  if search_window > 0:
    maps = jnp.where(_in_window(size, around, search_window), maps, -jnp.inf)
  flat = jnp.moveaxis(maps, -1, -3).reshape(*maps.shape[:-3], maps.shape[-1], -1)
  index = first_argmax(flat)                                                 # (..., C)
  y, x = jnp.divmod(index, size[1])
  return jnp.stack([x, y], axis=-1).astype(jnp.float32)


def fit_similarity(source: jax.Array, target: jax.Array, weights: jax.Array) -> jax.Array:
  """Least-squares similarity (scale, rotation, translation) taking points `source` (..., n, 2)
  to `target` (..., n, 2) with per-point `weights` (..., n); returns a (..., 2, 3) matrix."""
  w = weights[..., None].astype(jnp.float32)
  total = jnp.maximum(w.sum(axis=-2), 1e-12)                                 # (..., 1)
  mu_s = (w * source).sum(axis=-2) / total
  mu_t = (w * target).sum(axis=-2) / total
  s, t = source - mu_s[..., None, :], target - mu_t[..., None, :]
  a = (w[..., 0] * (s[..., 0] * t[..., 0] + s[..., 1] * t[..., 1])).sum(-1)
  b = (w[..., 0] * (s[..., 0] * t[..., 1] - s[..., 1] * t[..., 0])).sum(-1)
  norm = jnp.maximum((w[..., 0] * (s ** 2).sum(-1)).sum(-1), 1e-12)
  a, b = a / norm, b / norm
  linear = jnp.stack([jnp.stack([a, -b], -1), jnp.stack([b, a], -1)], -2)   # (..., 2, 2)
  offset = mu_t - (linear @ mu_s[..., None])[..., 0]
  return jnp.concatenate([linear, offset[..., None]], axis=-1)


def apply_affine(matrix: jax.Array, points: jax.Array) -> jax.Array:
  """(..., 2, 3) matrices applied to points (..., n, 2)."""
  return points @ matrix[..., :2].swapaxes(-1, -2) + matrix[..., None, :, 2]


def read_landmarks(logits: jax.Array, fallback: jax.Array, readout: str = "cluster_centroid",
                   window: int = 7) -> jax.Array:
  """Landmarks from response logits with the named read-out (`READOUTS`): the paper's
  'cluster_centroid' or the sub-pixel 'probability_centroid'."""
  if readout == "cluster_centroid":
    return landmarks_from_response(logits, fallback)
  if readout == "probability_centroid":
    return landmarks_from_probabilities(logits, fallback, window)
  raise ValueError(f"read-out must be one of {READOUTS}, got {readout!r}")
