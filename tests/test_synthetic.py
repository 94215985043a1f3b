"""Synthetic talking faces: determinism, exact landmarks, smooth motion, frequent hard cases,
and round trips through the real on-disk formats."""

import numpy as np
import pytest

from data_pipelines.image_folders import load_image_rgb, read_image_folder
from data_pipelines.synthetic import (SyntheticConfig, make_identity, render_video,
                                      write_300vw_layout, write_image_folder_layout)
from data_pipelines.video_300vw import read_300vw, read_frames

CLEAN = SyntheticConfig(size=128, num_frames=30, occluder_prob=0.0, illumination_prob=0.0,
                        blur_prob=0.0, noise_std=0.0, blinks=False)


def test_rendering_is_deterministic_by_seed():
  a = render_video(3, 1, CLEAN)
  b = render_video(3, 1, CLEAN)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  c = render_video(3, 2, CLEAN)
  assert not np.array_equal(a[1], c[1])
  assert not np.allclose(make_identity(3).shape, make_identity(4).shape)


@pytest.mark.parametrize("identity", range(4))
def test_landmarks_sit_on_the_drawn_features(identity):
  frames, landmarks, params = render_video(identity, 0, CLEAN)
  face = make_identity(identity)
  for t in range(0, 30, 5):
    frame, points = frames[t], landmarks[t]
    for eye in (range(36, 42), range(42, 48)):
      if np.ptp(points[list(eye)][:, 1]) < 3:
        continue                                                       # too thin to sample
      x, y = np.round(points[list(eye)].mean(0)).astype(int)
      # Iris colour at the eye centre (anti-aliased edges aside).
      assert np.abs(frame[y, x].astype(int) - face.iris).max() < 40, (t, eye)
    if params["mouth_open"][t] > 0.5:
      x, y = np.round(points[[62, 66]].mean(0)).astype(int)
      assert frame[y, x].max() < 60                                   # dark open mouth
    assert np.all(points > 0) and np.all(points < 128)


def test_motion_is_smooth_and_hard_cases_are_frequent():
  config = SyntheticConfig(size=128, num_frames=60)
  large_yaw, occluded = 0, 0
  for identity in range(24):
    _, landmarks, params = render_video(identity, 0, config)
    face_size = np.ptp(landmarks[:, :, 0], axis=1).mean()
    step = np.linalg.norm(np.diff(landmarks, axis=0), axis=-1).max()
    assert step < 0.25 * face_size                                    # no jumps between frames
    large_yaw += np.rad2deg(np.abs(params["yaw"]).max()) > 40
    occluded += params["occluded"].any()
  assert large_yaw >= 6 and occluded >= 6                             # >= 1/4 of the videos


def test_300vw_layout_round_trip(tmp_path):
  config = SyntheticConfig(size=64, num_frames=12)
  ids = write_300vw_layout(str(tmp_path), num_identities=2, seed=1, config=config)
  videos, _ = read_300vw(str(tmp_path))
  assert [v.video_id for v in videos] == ids
  frames, landmarks, _ = render_video(1 * 100003 + 1, 0, config)
  np.testing.assert_allclose(videos[1].landmarks, landmarks, atol=1e-3)   # .pts keeps 3 decimals
  decoded = read_frames(videos[1].path, 4, 3)
  assert np.abs(decoded.astype(int) - frames[4:7]).mean() < 12            # MJPG is lossy


def test_image_folder_layout_round_trip(tmp_path):
  write_image_folder_layout(str(tmp_path), num_identities=3, frames_per_identity=2,
                            val_identities=1, config=SyntheticConfig(size=64, num_frames=1))
  train, _ = read_image_folder(str(tmp_path), split="train")
  val, _ = read_image_folder(str(tmp_path), split="val")
  assert len(train) == 4 and len(val) == 2
  assert not {r.identity for r in train} & {r.identity for r in val}
  assert load_image_rgb(train[0].image).shape == (64, 64, 3)
