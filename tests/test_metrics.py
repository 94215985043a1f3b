"""Metrics on shapes whose errors are known by construction."""

import numpy as np
import pytest

from data_pipelines.landmarks import IBUG68_TO_7
from rednet_jax.evaluation import metrics


def face():
  """A 68-point shape: outer eye corners 100 px apart, eye centres 80 px apart, box 200x150."""
  shape = np.zeros((68, 2))
  shape[:, 0] = np.linspace(0, 200, 68)
  shape[:, 1] = np.linspace(0, 150, 68)
  shape[36], shape[45] = (50, 60), (150, 60)
  shape[37:42] = shape[36] + (10, 0)      # left eye centre: mean of 36-41 = (58.33, 60)
  shape[42:45] = shape[45] - (10, 0)
  shape[46:48] = shape[45] - (10, 0)      # right eye centre: (141.67, 60)
  return shape


def test_normalisers_68_and_7_points():
  shape = face()
  assert np.isclose(metrics.normaliser(shape, "io"), 100.0)
  assert np.isclose(metrics.normaliser(shape, "ip"), 141.666667 - 58.333333, atol=1e-4)
  assert np.isclose(metrics.normaliser(shape, "box"), 250.0)          # 200 x 150 box
  seven = shape[list(IBUG68_TO_7)]
  assert np.isclose(metrics.normaliser(seven, "io"), 100.0)
  # 7-point eye centres: midpoints of each eye's two corners.
  expected = np.linalg.norm((seven[0] + seven[1]) / 2 - (seven[2] + seven[3]) / 2)
  assert np.isclose(metrics.normaliser(seven, "ip"), expected)
  with pytest.raises(ValueError, match="68 or 7"):
    metrics.normaliser(np.zeros((21, 2)), "io")


def test_errors_summaries_and_groups():
  shape = face()
  moved = shape + (3.0, 4.0)                                         # 5 px everywhere
  assert np.isclose(metrics.normalised_errors(moved, shape, "io"), 0.05)
  assert np.isclose(metrics.normalised_errors(moved, shape, "box"), 0.02)
  s = metrics.summarise(np.array([0.02, 0.04, 0.09, 0.12]), "ip")
  assert np.isclose(s["nme_ip"], 6.75) and s["frames"] == 4
  assert np.isclose(s["fr08_ip"], 50.0) and np.isclose(s["fr10_ip"], 25.0)
  # AUC to 10 %: mean over frames of max(0, 1 - e / 0.1) = (0.8 + 0.6 + 0.1 + 0) / 4.
  assert abs(s["auc10_ip"] - 0.375) < 2e-3
  assert abs(s["auc08_ip"] - (0.75 + 0.5) / 4) < 2e-3
  mouth_only = shape.copy()
  mouth_only[48:68] += (0.0, 10.0)
  groups = metrics.group_errors(mouth_only, shape)
  assert np.isclose(groups["nme_io_mouth"], 10.0) and groups["nme_io_jaw"] == 0.0


def test_jitter_is_zero_for_constant_velocity_and_measures_a_shake():
  shape = face()
  steady = np.stack([shape + (2.0 * t, 0.0) for t in range(6)])       # constant velocity
  j = metrics.jitter(steady)
  assert j["jitter_io_mean"] == pytest.approx(0.0, abs=1e-9)
  shaky = steady.copy()
  shaky[3] += (5.0, 0.0)                                              # one frame off by 5 px
  j = metrics.jitter(shaky)
  # accelerations at t = 2, 3, 4: 5, 10, 5 px over a 100 px inter-ocular distance
  assert j["jitter_io_mean"] == pytest.approx(100 * (5 + 10 + 5) / 4 / 100)
  with pytest.raises(ValueError, match="T >= 3"):
    metrics.jitter(shape[None])
