"""The One-Euro stabiliser: still landmarks are smoothed, fast motion is followed with little
lag, tracks restart cleanly, and the Tracker reports filtered points while tracking raw ones."""

import numpy as np
import pytest

from rednet_jax.evaluation import metrics
from rednet_jax.inference.stabiliser import (OneEuroFilter, OneEuroSettings, lag_cost, stabilise,
                                  zero_phase_reference)

_SHAPE = np.array([[0, 0], [1, 0], [2, 0], [3, 0], [1.5, 1], [0.8, 2], [2.2, 2]],
                  np.float64) * 40 + 100          # 7 points, outer eye corners 120 px apart


def test_a_still_face_with_readout_noise_is_smoothed():
  rng = np.random.default_rng(0)
  noisy = _SHAPE + rng.normal(0, 1.5, size=(100, 7, 2))
  smooth = stabilise([noisy])[0]
  assert metrics.jitter(smooth)["jitter_io_mean"] < 0.5 * metrics.jitter(noisy)["jitter_io_mean"]
  error = lambda p: np.linalg.norm(p[20:] - _SHAPE, axis=-1).mean()
  assert error(smooth) < 0.7 * error(noisy)


def test_fast_motion_is_followed_with_less_lag_than_a_fixed_low_pass():
  moving = _SHAPE + np.arange(50)[:, None, None] * np.array([8.0, 0.0])  # 8 px per frame
  adaptive = stabilise([moving])[0]
  fixed = stabilise([moving], OneEuroSettings(beta=0.0))[0]
  lag = lambda p: np.abs(p[-1] - moving[-1]).max()
  assert lag(adaptive) < 0.25 * lag(fixed)
  assert lag(adaptive) < 4.0


def test_filter_starts_at_the_first_shape_and_restarts_after_reset():
  f = OneEuroFilter(fps=30)
  np.testing.assert_allclose(f(_SHAPE), _SHAPE)
  f(_SHAPE + 5)
  f.reset()
  np.testing.assert_allclose(f(_SHAPE + 50), _SHAPE + 50)
  # stabilise() filters each track from a fresh state.
  a, b = stabilise([np.stack([_SHAPE, _SHAPE + 1]), np.stack([_SHAPE + 80, _SHAPE + 81])])
  np.testing.assert_allclose(b[0], _SHAPE + 80)


def test_bad_settings_are_errors():
  with pytest.raises(ValueError, match="positive cut-offs"):
    OneEuroSettings(min_cutoff_hz=0)
  with pytest.raises(ValueError, match="fps"):
    OneEuroFilter(fps=0)


def test_zero_phase_reference_keeps_quadratic_motion_and_averages_flicker():
  t = np.arange(40, dtype=np.float64)[:, None, None]
  moving = _SHAPE + t * np.array([3.0, 0.0]) + 0.05 * t ** 2 * np.array([0.0, 1.0])
  np.testing.assert_allclose(zero_phase_reference(moving, 7), moving[3:-3], atol=1e-9)
  noisy = moving + np.random.default_rng(1).normal(0, 2.0, moving.shape)
  error = lambda p, truth: np.linalg.norm(p - truth, axis=-1).mean()
  assert error(zero_phase_reference(noisy, 11), moving[5:-5]) < 0.6 * error(noisy, moving)
  with pytest.raises(ValueError, match="odd"):
    zero_phase_reference(moving, 8)


def test_lag_cost_charges_lag_on_moving_faces_and_credits_smoothing_of_still_ones():
  rng = np.random.default_rng(2)
  still = _SHAPE + rng.normal(0, 1.5, size=(80, 7, 2))
  moving = _SHAPE + np.arange(80)[:, None, None] * np.array([6.0, 0.0])
  slow = OneEuroSettings(min_cutoff_hz=0.3, beta=0.0)
  assert lag_cost(stabilise([still], slow), [still]) < 0
  assert lag_cost(stabilise([moving], slow), [moving]) > 10      # % of the eye distance
  assert lag_cost(stabilise([moving]), [moving]) < 0.2 * lag_cost(stabilise([moving], slow),
                                                                    [moving])
  assert lag_cost([moving], [moving]) == 0
