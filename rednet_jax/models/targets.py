"""Training targets and feedback maps rendered on the device: RED-Net v1's landmark label maps,
RED-Net v2's binary disks and Gaussian heatmaps.

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


def square_size_for_step(sizes: tuple[int, ...], step: int) -> int:
  """Side of the feedback square fed into spatial step `step` (0-based); the last size repeats."""
  return sizes[min(step, len(sizes) - 1)]


def pixel_grid(size: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
  h, w = size
  return (jnp.arange(w, dtype=jnp.float32)[None, :], jnp.arange(h, dtype=jnp.float32)[:, None])


def render_gaussian_heatmaps(points: jax.Array, size: tuple[int, int], sigma: float,
                             peak: float = 1.0) -> jax.Array:
  """One channel per landmark, peak * exp(-d^2 / (2 sigma^2)) around it (RED-Net v2's
  regression target, sigma = 5 px). points (..., L, 2) -> (..., H, W, L) float32."""
  xs, ys = pixel_grid(size)
  px = points[..., 0, None, None].astype(jnp.float32)            # (..., L, 1, 1)
  py = points[..., 1, None, None].astype(jnp.float32)
  maps = jnp.exp(-((xs - px) ** 2 + (ys - py) ** 2) / (2.0 * sigma ** 2))  # (..., L, H, W)
  return peak * jnp.moveaxis(maps, -3, -1)


def render_disks(points: jax.Array, size: tuple[int, int], radius: float) -> jax.Array:
  """One binary channel per landmark, 1 within `radius` px of it (RED-Net v2's detection
  target, radius 5 px). points (..., L, 2) -> (..., H, W, L) float32."""
  xs, ys = pixel_grid(size)
  px = points[..., 0, None, None].astype(jnp.float32)
  py = points[..., 1, None, None].astype(jnp.float32)
  inside = (xs - px) ** 2 + (ys - py) ** 2 <= radius ** 2
  return jnp.moveaxis(inside.astype(jnp.float32), -3, -1)


def to_map_pixels(points: jax.Array) -> jax.Array:
  """Input pixels -> pixels of a half-resolution response map (pixel centres at integers in
  both: input pixels 2u and 2u + 1 make map pixel u, whose centre is input 2u + 0.5)."""
  return (points + 0.5) / 2.0 - 0.5


def to_input_pixels(points: jax.Array) -> jax.Array:
  """Inverse of `to_map_pixels`."""
  return (points + 0.5) * 2.0 - 0.5
