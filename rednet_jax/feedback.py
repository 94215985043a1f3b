"""Spatial feedback: landmark label maps and the response-map -> shape mapping of RED-Net v1.

Conventions used throughout the project: landmarks are (x, y) in 0-based pixel coordinates of the
model input, x = column, y = row, pixel centres at integer positions. A label map is an int32
(H, W) image with 0 = background and l = landmark l (1..L).

Everything here is pure jnp and runs inside the jitted model: rendering in the data loader
costs 40+ MB per clip and starves the workers (docs/engineering_notes.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_FAR = jnp.iinfo(jnp.int32).max


def render_label_map(points: jax.Array, size: tuple[int, int], square,
                     max_square: int | None = None) -> jax.Array:
  """Label map with a filled `square` x `square` block of label l+1 centred on landmark l.

  points: (..., L, 2) float (x, y). Centres are rounded to the nearest pixel. Where squares
  overlap, a pixel takes the landmark whose centre is nearest in Chebyshev distance (ties: the
  lower index). Squares are clipped at the image border; a landmark outside the image draws only
  its visible part. `square` must be odd so the block is centred; it may be a traced integer
  (one size per spatial step inside `nn.scan`) when the static `max_square` bounds it.
  Returns (..., H, W) int32.
  """
  if max_square is None:
    max_square = int(square)
    if max_square < 1 or max_square % 2 == 0:
      raise ValueError(f"square side must be a positive odd number of pixels, got {square}")
  elif max_square < 1 or max_square % 2 == 0:
    raise ValueError(f"max_square must be a positive odd number of pixels, got {max_square}")
  h, w = size
  lead, num_points = points.shape[:-2], points.shape[-2]
  centres = jnp.round(points).astype(jnp.int32).reshape(-1, num_points, 2)
  n = centres.shape[0]
  r = max_square // 2
  offsets = jnp.arange(-r, r + 1)
  dy, dx = jnp.meshgrid(offsets, offsets, indexing="ij")                     # (s, s)
  cols = centres[:, :, 0, None, None] + dx                                   # (n, L, s, s)
  rows = centres[:, :, 1, None, None] + dy
  # Key orders candidates by (distance, landmark index); the minimum wins the pixel.
  distance = jnp.maximum(jnp.abs(dx), jnp.abs(dy))
  label = jnp.arange(1, num_points + 1)[None, :, None, None]
  key = distance * (num_points + 1) + label                                 # (n, L, s, s)
  inside = ((cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
            & (distance <= jnp.asarray(square) // 2))
  flat = jnp.where(inside, (jnp.arange(n)[:, None, None, None] * h + rows) * w + cols, n * h * w)
  keys = jnp.full((n * h * w,), _FAR, jnp.int32)
  keys = keys.at[flat.reshape(-1)].min(jnp.broadcast_to(key, flat.shape).reshape(-1), mode="drop")
  labels = jnp.where(keys == _FAR, 0, keys % (num_points + 1))
  return labels.reshape(*lead, h, w)


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
  xs, ys = _pixel_grid((h, w))
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


def square_size_for_step(sizes: tuple[int, ...], step: int) -> int:
  """Side of the feedback square fed into spatial step `step` (0-based); the last size repeats."""
  return sizes[min(step, len(sizes) - 1)]


def _pixel_grid(size: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
  h, w = size
  return (jnp.arange(w, dtype=jnp.float32)[None, :], jnp.arange(h, dtype=jnp.float32)[:, None])


def render_gaussian_heatmaps(points: jax.Array, size: tuple[int, int], sigma: float) -> jax.Array:
  """One channel per landmark, exp(-d^2 / (2 sigma^2)) around it, peak 1 (RED-Net v2's
  regression target, sigma = 5 px). points (..., L, 2) -> (..., H, W, L) float32."""
  xs, ys = _pixel_grid(size)
  px = points[..., 0, None, None].astype(jnp.float32)            # (..., L, 1, 1)
  py = points[..., 1, None, None].astype(jnp.float32)
  maps = jnp.exp(-((xs - px) ** 2 + (ys - py) ** 2) / (2.0 * sigma ** 2))  # (..., L, H, W)
  return jnp.moveaxis(maps, -3, -1)


def render_disks(points: jax.Array, size: tuple[int, int], radius: float) -> jax.Array:
  """One binary channel per landmark, 1 within `radius` px of it (RED-Net v2's detection
  target, radius 5 px). points (..., L, 2) -> (..., H, W, L) float32."""
  xs, ys = _pixel_grid(size)
  px = points[..., 0, None, None].astype(jnp.float32)
  py = points[..., 1, None, None].astype(jnp.float32)
  inside = (xs - px) ** 2 + (ys - py) ** 2 <= radius ** 2
  return jnp.moveaxis(inside.astype(jnp.float32), -3, -1)
