"""Label-map feedback: square sizes, positions, labels, overlaps, and the response read-out."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rednet_jax.models.layers import first_argmax
from rednet_jax.models.readout import landmarks_from_response, read_landmarks
from rednet_jax.models.targets import render_label_map, square_size_for_step


def numpy_label_map(points, h, w, square):
  """Reference: per pixel, the nearest (Chebyshev) landmark within the square, lowest index."""
  labels = np.zeros((h, w), np.int32)
  best = np.full((h, w), np.inf)
  r = square // 2
  for l, (x, y) in enumerate(np.round(points).astype(int)):
    for row in range(max(0, y - r), min(h, y + r + 1)):
      for col in range(max(0, x - r), min(w, x + r + 1)):
        d = max(abs(row - y), abs(col - x))
        if d < best[row, col]:
          best[row, col], labels[row, col] = d, l + 1
  return labels


@pytest.mark.parametrize("square", [7, 5, 3, 1])
def test_isolated_landmarks_draw_filled_squares_of_the_given_side(square):
  points = np.array([[10.2, 12.7], [40.0, 30.0], [20.0, 50.4]], np.float32)
  labels = np.asarray(render_label_map(jnp.asarray(points), (64, 64), square))
  for l, (x, y) in enumerate(np.round(points).astype(int), start=1):
    rows, cols = np.nonzero(labels == l)
    assert len(rows) == square * square
    assert rows.min() == y - square // 2 and rows.max() == y + square // 2
    assert cols.min() == x - square // 2 and cols.max() == x + square // 2
  assert set(np.unique(labels)) == {0, 1, 2, 3}


def test_overlaps_borders_and_batch_match_numpy_reference():
  rng = np.random.default_rng(0)
  # 68 points crowded into a small face (many overlaps), some off the image edge.
  points = rng.uniform(-4, 36, size=(2, 3, 68, 2)).astype(np.float32)
  labels = np.asarray(render_label_map(jnp.asarray(points), (32, 40), 5))
  assert labels.shape == (2, 3, 32, 40) and labels.max() <= 68 and labels.min() >= 0
  for i, j in np.ndindex(2, 3):
    np.testing.assert_array_equal(labels[i, j], numpy_label_map(points[i, j], 32, 40, 5))


def test_traced_square_size_inside_jit():
  points = jnp.array([[[16.0, 16.0]]])
  render = jax.jit(lambda p, s: render_label_map(p, (32, 32), s, max_square=7))
  for square in (7, 5, 3):
    assert int((render(points, square) == 1).sum()) == square * square


def test_even_square_is_rejected():
  with pytest.raises(ValueError, match="odd"):
    render_label_map(jnp.zeros((1, 2)), (8, 8), 4)


def test_response_readout_returns_cluster_centres():
  rng = np.random.default_rng(1)
  h, w, num = 24, 32, 5
  labels = rng.integers(0, num, size=(2, h, w))        # landmark 5 (label 5) never appears
  logits = np.asarray(jax.nn.one_hot(labels, num + 1)) * 3.0 + rng.normal(size=(2, h, w, num + 1)) * 0.1
  argmax = logits.argmax(-1)
  fallback = rng.uniform(0, 20, size=(2, num, 2)).astype(np.float32)
  centres = np.asarray(landmarks_from_response(jnp.asarray(logits), jnp.asarray(fallback)))
  for b in range(2):
    for l in range(1, num + 1):
      rows, cols = np.nonzero(argmax[b] == l)
      if len(rows):
        np.testing.assert_allclose(centres[b, l - 1], [cols.mean(), rows.mean()], rtol=1e-5)
      else:
        np.testing.assert_array_equal(centres[b, l - 1], fallback[b, l - 1])
  assert not (argmax == num).any()


def test_first_argmax_is_argmax_with_ties_and_a_channel_for_nan():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 9, 7, 69)), jnp.float32)
  ties = jnp.round(x * 2)                  # many equal maxima: the first one wins, as argmax
  for a in (x, ties, -jnp.abs(ties)):
    np.testing.assert_array_equal(first_argmax(a), jnp.argmax(a, axis=-1))
  with_nan = x.at[0, 0, 0, 5].set(jnp.nan)
  assert 0 <= int(first_argmax(with_nan)[0, 0, 0]) < 69     # a channel, never out of range
  np.testing.assert_array_equal(first_argmax(with_nan)[1], jnp.argmax(x, axis=-1)[1])


def test_render_then_readout_recovers_integer_landmarks():
  points = np.array([[5.0, 6.0], [20.0, 9.0], [12.0, 25.0], [28.0, 28.0]], np.float32)
  for square in (7, 5, 3):
    labels = render_label_map(jnp.asarray(points), (32, 32), square)
    logits = jax.nn.one_hot(labels, 5)
    np.testing.assert_allclose(np.asarray(landmarks_from_response(logits, jnp.zeros((4, 2)))),
                               points)


def test_square_size_schedule_repeats_the_last():
  assert [square_size_for_step((7, 5, 3), k) for k in range(5)] == [7, 5, 3, 3, 3]


def test_gaussian_heatmaps_and_disks():
  from rednet_jax.models.targets import render_disks, render_gaussian_heatmaps
  points = jnp.array([[[10.0, 20.0], [30.5, 5.0]]])                   # (1, 2, 2)
  heat = np.asarray(render_gaussian_heatmaps(points, (32, 40), sigma=5.0))
  assert heat.shape == (1, 32, 40, 2)
  assert np.unravel_index(heat[0, :, :, 0].argmax(), (32, 40)) == (20, 10)
  assert heat[0, 20, 10, 0] == pytest.approx(1.0)
  assert heat[0, 20, 15, 0] == pytest.approx(np.exp(-0.5), rel=1e-5)   # one sigma away
  disks = np.asarray(render_disks(points, (32, 40), radius=5.0))
  ys, xs = np.mgrid[:32, :40]
  np.testing.assert_array_equal(disks[0, :, :, 0], ((xs - 10) ** 2 + (ys - 20) ** 2 <= 25))
  assert disks[0, :, :, 0].sum() == 81                                  # lattice points, r = 5


def _blob_logits(centres, size=24, background=2.0, peak=6.0, spread=4.0):
  """Logits whose landmark channels are Gaussian bumps at sub-pixel `centres`."""
  ys, xs = np.mgrid[0:size, 0:size]
  logits = np.zeros((size, size, len(centres) + 1), np.float32)
  logits[..., 0] = background
  for l, (cx, cy) in enumerate(centres):
    logits[..., l + 1] = peak * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / spread)
  return jnp.asarray(logits)


def test_probability_readout_is_sub_pixel_where_the_cluster_centre_is_not():
  rng = np.random.default_rng(0)
  centres = rng.uniform(5, 19, size=(40, 2))
  fallback = jnp.zeros((1, 2))
  cluster, prob = [], []
  for c in centres:
    logits = _blob_logits([c])
    cluster.append(np.asarray(read_landmarks(logits, fallback, "cluster_centroid"))[0])
    prob.append(np.asarray(read_landmarks(logits, fallback, "probability_centroid", 7))[0])
  cluster_error = np.linalg.norm(np.stack(cluster) - centres, axis=-1)
  prob_error = np.linalg.norm(np.stack(prob) - centres, axis=-1)
  assert prob_error.max() < 0.1, prob_error.max()
  assert cluster_error.mean() > 3 * prob_error.mean()
  # The window keeps another landmark's mass out: two bumps far apart read independently.
  two = read_landmarks(_blob_logits([(5.3, 6.6), (18.2, 17.4)]), jnp.zeros((2, 2)),
                       "probability_centroid", 7)
  np.testing.assert_allclose(np.asarray(two), [[5.3, 6.6], [18.2, 17.4]], atol=0.1)


def test_readout_names_and_windows_are_checked():
  logits = _blob_logits([(5.0, 5.0)])
  with pytest.raises(ValueError, match="read-out must be one of"):
    read_landmarks(logits, jnp.zeros((1, 2)), "soft_argmax")
  with pytest.raises(ValueError, match="odd"):
    read_landmarks(logits, jnp.zeros((1, 2)), "probability_centroid", 4)
