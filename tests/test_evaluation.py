"""Held-out evaluation: frame-by-frame tracking on own predictions, metrics, figures."""

import cv2
import jax.numpy as jnp
import numpy as np

from rednet_jax.evaluation import reports
from rednet_jax.models.system import track_clip
from rednet_jax.evaluation.metrics import normalised_errors, summarise
from test_train_step import L, real_init
from rednet_jax.models import build_model


def tiny_video_model():
  return build_model(dict(name="rednet_v1", num_landmarks=L, width=1 / 16, num_steps=2,
                          scan_unroll=2, use_temporal=True, lstm_hidden=8))


def test_track_clip_feeds_each_frame_the_previous_prediction_moved_into_its_crop():
  model = tiny_video_model()
  variables = real_init(model, (2, 3, 64, 64, 3))
  rng = np.random.default_rng(0)
  frames = jnp.asarray(rng.normal(size=(2, 3, 64, 64, 3)), jnp.float32)
  mean = jnp.asarray(rng.uniform(20, 44, size=(L, 2)), jnp.float32)
  # Frame t's crop is the video shifted by (3t, -2t) px and scaled by 1.1^t.
  matrices = np.zeros((2, 3, 2, 3), np.float32)
  for t in range(3):
    matrices[:, t, :, :2] = np.eye(2) * 1.1 ** t
    matrices[:, t, :, 2] = (3 * t, -2 * t)
  points, inits = track_clip(model, variables, frames, mean, jnp.asarray(matrices))
  assert points.shape == (2, 2, 3, L, 2) and inits.shape == (2, 3, L, 2)
  np.testing.assert_allclose(inits[:, 0], np.broadcast_to(mean, (2, L, 2)))
  for t in (1, 2):
    previous = np.asarray(points[-1, :, t - 1])
    in_video = (previous - matrices[0, t - 1, :, 2]) / 1.1 ** (t - 1)
    expected = in_video * 1.1 ** t + matrices[0, t, :, 2]
    np.testing.assert_allclose(inits[:, t], expected, rtol=1e-5, atol=1e-4)
  # Without matrices the frames share coordinates: z_0 is the previous shape itself.
  points, inits = track_clip(model, variables, frames, mean)
  np.testing.assert_allclose(inits[:, 1:], points[-1, :, :-1], atol=1e-5)


def test_error_metrics_on_known_values():
  landmarks = np.zeros((68, 2), np.float32)
  landmarks[45, 0] = 100.0                                   # outer eye corners 100 px apart
  errors = normalised_errors(jnp.asarray(landmarks + [6.0, 8.0]), jnp.asarray(landmarks), "io")
  np.testing.assert_allclose(errors, 0.10, rtol=1e-6)        # 10 px / 100 px
  m = summarise(np.array([0.02, 0.04, 0.12, 0.06]), "io")
  assert np.isclose(m["nme_io"], 6.0) and np.isclose(m["fr10_io"], 25.0) and m["frames"] == 4
  # AUC@10: mean over frames of (1 - e / 0.1) for e below 0.1 = (0.8 + 0.6 + 0 + 0.4) / 4.
  assert abs(m["auc10_io"] - 0.45) < 0.01


def test_figures_and_overlay_video_are_written(tmp_path):
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 255, size=(5, 32, 32, 3), dtype=np.uint8)
  points = rng.uniform(0, 31, size=(5, L, 2)).astype(np.float32)
  reports.overlay_video(frames, points, points, str(tmp_path / "clip.mp4"))
  video = cv2.VideoCapture(str(tmp_path / "clip.mp4"))
  count = 0
  while video.read()[0]:
    count += 1
  assert count == 5
  reports.ced_plot({"a": np.array([0.01, 0.05]), "b": np.array([0.2])}, str(tmp_path / "c.png"))
  reports.refinement_figure(frames[:2], points[:2], np.stack([points[:2]] * 3), points[:2],
                            str(tmp_path / "r.png"))
  for name in ("c.png", "r.png"):
    assert cv2.imread(str(tmp_path / name)) is not None
