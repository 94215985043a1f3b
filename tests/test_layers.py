"""Indexed max-pooling / unpooling against a plain NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rednet_jax.models.layers import max_pool_with_argmax, unpool_with_argmax


def numpy_pool(x, wh=2, ww=2):
  b, h, w, c = x.shape
  pooled = np.zeros((b, h // wh, w // ww, c), x.dtype)
  index = np.zeros((b, h // wh, w // ww, c), np.int64)
  for n in range(b):
    for i in range(h // wh):
      for j in range(w // ww):
        for ch in range(c):
          window = x[n, i * wh:(i + 1) * wh, j * ww:(j + 1) * ww, ch].reshape(-1)
          index[n, i, j, ch] = int(np.argmax(window))  # first maximum on ties
          pooled[n, i, j, ch] = window.max()
  return pooled, index


def numpy_unpool(values, index, wh=2, ww=2):
  b, hp, wp, c = values.shape
  out = np.zeros((b, hp * wh, wp * ww, c), values.dtype)
  for n in range(b):
    for i in range(hp):
      for j in range(wp):
        for ch in range(c):
          di, dj = divmod(int(index[n, i, j, ch]), ww)
          out[n, i * wh + di, j * ww + dj, ch] = values[n, i, j, ch]
  return out


@pytest.mark.parametrize("window", [(2, 2), (4, 4), (2, 3)])
def test_pool_and_unpool_match_numpy(window):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 4 * window[0], 2 * window[1], 5)).astype(np.float32)
  pooled, index = max_pool_with_argmax(jnp.asarray(x), window)
  ref_pooled, ref_index = numpy_pool(x, *window)
  np.testing.assert_array_equal(np.asarray(pooled), ref_pooled)
  np.testing.assert_array_equal(np.asarray(index), ref_index)
  values = rng.normal(size=ref_pooled.shape).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(unpool_with_argmax(jnp.asarray(values), index, window)),
                                numpy_unpool(values, ref_index, *window))


def test_ties_pick_first_position_in_row_major_order():
  # Integer-valued input with many ties: every window is constant or has a repeated maximum.
  x = np.array([[1, 1, 0, 2],
                [1, 0, 2, 2],
                [5, 3, 3, 3],
                [5, 5, 3, 3]], np.float32)[None, :, :, None]
  _, index = max_pool_with_argmax(jnp.asarray(x))
  np.testing.assert_array_equal(np.asarray(index)[0, :, :, 0], [[0, 1], [0, 0]])
  np.testing.assert_array_equal(np.asarray(index), numpy_pool(x)[1])


def test_unpool_of_pool_keeps_maxima_and_zeros_the_rest():
  x = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype(np.float32)
  pooled, index = max_pool_with_argmax(jnp.asarray(x))
  restored = np.asarray(unpool_with_argmax(pooled, index))
  mask = restored != 0
  assert mask.sum() == x.size // 4
  np.testing.assert_array_equal(restored[mask], x[mask])


def test_gradients_follow_the_recorded_index():
  rng = np.random.default_rng(2)
  x = rng.integers(0, 3, size=(2, 4, 6, 3)).astype(np.float32)  # ties everywhere
  cotangent = rng.normal(size=(2, 2, 3, 3)).astype(np.float32)
  ref_pooled, ref_index = numpy_pool(x)

  grad_x = jax.grad(lambda v: jnp.sum(max_pool_with_argmax(v)[0] * cotangent))(jnp.asarray(x))
  # d pooled / d x routes each window's cotangent to its first maximum only.
  np.testing.assert_allclose(np.asarray(grad_x), numpy_unpool(cotangent, ref_index))

  # d unpool / d values reads the upstream gradient at each recorded position.
  upstream = rng.normal(size=x.shape).astype(np.float32)
  grad_v = jax.grad(lambda v: jnp.sum(unpool_with_argmax(v, ref_index) * upstream))(
      jnp.asarray(ref_pooled))
  expected = np.zeros_like(ref_pooled)
  for n, i, j, c in np.ndindex(*ref_pooled.shape):
    di, dj = divmod(int(ref_index[n, i, j, c]), 2)
    expected[n, i, j, c] = upstream[n, 2 * i + di, 2 * j + dj, c]
  np.testing.assert_allclose(np.asarray(grad_v), expected)


def test_jitted_pooling_is_polymorphic_over_batch():
  pool = jax.jit(max_pool_with_argmax)
  for batch in (1, 3):
    x = np.random.default_rng(batch).normal(size=(batch, 4, 4, 2)).astype(np.float32)
    pooled, index = pool(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(index), numpy_pool(x)[1])


def test_bad_shapes_are_clear_errors():
  with pytest.raises(ValueError, match="not divisible"):
    max_pool_with_argmax(jnp.zeros((1, 5, 4, 1)))
  with pytest.raises(ValueError, match="differ in shape"):
    unpool_with_argmax(jnp.zeros((1, 2, 2, 1)), jnp.zeros((1, 2, 2, 2), jnp.int8))
