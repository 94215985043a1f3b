"""Clips from stills: exact landmark transport through the homographies, smooth motion."""

import numpy as np

from data_pipelines.stills_to_clips import StillClipConfig, clip_from_still
from test_image_pipeline import COLOURS, colour_id, dotted_face


def test_landmarks_follow_the_warped_image_exactly():
  image, points = dotted_face(1)
  config = StillClipConfig(clip_length=6, out_size=128, occluder_prob=0.0, brightness_drift=0.0)
  frames, moved = clip_from_still(image, points, np.random.default_rng(0), config)
  assert frames.shape == (6, 128, 128, 3) and moved.shape == (6, 68, 2)
  for t in range(6):
    for l in range(68):
      assert colour_id(frames[t], moved[t, l]) == l, (t, l)


def test_motion_is_smooth_and_occluder_moves_across():
  image, points = dotted_face(2)
  config = StillClipConfig(clip_length=10, occluder_prob=1.0)
  frames, moved = clip_from_still(image, points, np.random.default_rng(3), config)
  step = np.linalg.norm(np.diff(moved, axis=0), axis=-1).max()
  assert 0 < step < 6.0                                     # px per frame at 128 px
  # The occluder hides some landmarks in some frames, never the same ones throughout.
  hidden = np.array([[colour_id(frames[t], moved[t, l]) != l for l in range(68)]
                     for t in range(10)])
  assert hidden.any() and not hidden.all(axis=0).any()
  assert len(COLOURS) == 68


def test_still_clip_batches_from_the_ytf68_layout():
  import os
  from data_pipelines.image_folders import read_image_folder
  from data_pipelines.stills_to_clips import still_clip_batch_dataset
  records, _ = read_image_folder(os.path.join(os.path.dirname(__file__), "fixtures",
                                              "ytf68_mini"))
  config = StillClipConfig(clip_length=4, out_size=32)
  dataset, left_over = still_clip_batch_dataset(records, 2, seed=0, clips_per_image=2,
                                                config=config)
  assert len(dataset) == 6 and left_over == 0
  batch = dataset[0]
  assert batch["image"].shape == (2, 4, 32, 32, 3) and batch["landmarks"].shape == (2, 4, 68, 2)
  assert sorted(batch["identity"].tolist()) == [0, 1] and batch["valid"].all()
  again, _ = still_clip_batch_dataset(records, 2, seed=0, clips_per_image=2, config=config)
  np.testing.assert_array_equal(again[0]["landmarks"], batch["landmarks"])
