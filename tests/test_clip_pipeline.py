"""Clip sampling, identity-disjoint batches, and clip batches decoded from 300-VW videos."""

import collections

import numpy as np
import pytest

from data_pipelines.batching import identity_disjoint_batches
from data_pipelines.clip_pipeline import clip_batch_dataset, sample_clips
from data_pipelines.video_300vw import read_300vw
from test_video_300vw import write_video


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batches_never_repeat_an_identity_and_use_almost_everything(seed):
  rng = np.random.default_rng(seed)
  counts = rng.integers(1, 40, size=12)                      # skewed identity sizes
  identities = [f"id{i}" for i, n in enumerate(counts) for _ in range(n)]
  batches, left_over = identity_disjoint_batches(identities, 5, seed)
  used = [i for b in batches for i in b]
  assert len(used) == len(set(used)) and len(used) + left_over == len(identities)
  for batch in batches:
    assert len(batch) == 5 and len({identities[i] for i in batch}) == 5
  # Only what cannot form a batch of distinct identities is left over.
  remaining = collections.Counter(identities) - collections.Counter(identities[i] for i in used)
  assert len(remaining) < 5
  again, _ = identity_disjoint_batches(identities, 5, seed)
  assert again == batches
  with pytest.raises(ValueError, match="at least 5 identities"):
    identity_disjoint_batches(["a", "b", "a"], 5, seed)


def test_clip_batches_from_videos_forward_and_reversed(tmp_path):
  for name in ("a", "b", "c"):
    write_video(str(tmp_path / name), n_frames=3, size=(64, 64))
  videos, _ = read_300vw(str(tmp_path))
  clips = sample_clips(videos, clip_length=2, clips_per_video=4, seed=0)
  assert len(clips) == 3 * 4 * 2
  assert all(0 <= c.start <= 1 for c in clips)
  dataset, left_over = clip_batch_dataset(videos, clip_length=2, batch_size=3, out_size=32,
                                          clips_per_video=4, seed=0)
  assert len(dataset) == 8 and left_over == 0
  batch = dataset[0]
  assert batch["image"].shape == (3, 2, 32, 32, 3) and batch["image"].dtype == np.uint8
  assert batch["landmarks"].shape == (3, 2, 68, 2) and batch["landmarks"].dtype == np.float32
  assert sorted(batch["identity"].tolist()) == [0, 1, 2]
  # Reversal: the colour sequence of a reversed clip runs backwards through the video.
  from data_pipelines.clip_pipeline import LoadClipBatch, Clip
  loader = LoadClipBatch(videos, 2, 32, 1.3, {"a": 0, "b": 1, "c": 2})
  forward, points_f, matrices_f = loader.load_clip(Clip(0, 1, False))
  backward, points_b, _ = loader.load_clip(Clip(0, 1, True))
  # crop_matrix maps video pixels to each frame's crop pixels.
  from data_pipelines.face_crops import transform_points
  np.testing.assert_allclose(transform_points(matrices_f[1], videos[0].landmarks[2]),
                             points_f[1], atol=1e-4)
  assert batch["crop_matrix"].shape == (3, 2, 2, 3)
  np.testing.assert_allclose(forward[:, 16, 16].astype(float), backward[::-1, 16, 16], atol=12)
  assert np.argmax(forward[0, 16, 16]) == 1 and np.argmax(forward[1, 16, 16]) == 2  # green, blue


def test_undecodable_clip_is_an_error_or_a_masked_sample(tmp_path):
  for name in ("a", "b"):
    write_video(str(tmp_path / name), n_frames=3, size=(64, 64))
  videos, _ = read_300vw(str(tmp_path))
  (tmp_path / "b" / "vid.avi").write_bytes(b"gone")            # damaged after indexing
  from data_pipelines.pts import DataError
  strict, _ = clip_batch_dataset(videos, clip_length=2, batch_size=2, out_size=32,
                                 clips_per_video=1, seed=0)
  with pytest.raises(DataError, match="b/vid.avi: cannot open video"):
    strict[0]
  lenient, _ = clip_batch_dataset(videos, clip_length=2, batch_size=2, out_size=32,
                                  clips_per_video=1, seed=0, skip_bad_samples=True)
  batch = lenient[0]
  assert batch["valid"].sum() == 1 and batch["image"].shape == (2, 2, 32, 32, 3)
  assert not batch["image"][~batch["valid"]].any()


def test_mirrored_clips_flip_frames_landmarks_and_crop_matrices(tmp_path):
  from data_pipelines.clip_pipeline import Clip, LoadClipBatch  # pylint: disable=g-import-not-at-top
  from data_pipelines.face_crops import transform_points  # pylint: disable=g-import-not-at-top
  from data_pipelines.landmarks import flip_landmarks, flip_permutation  # pylint: disable=g-import-not-at-top
  for name in ("a", "b"):
    write_video(str(tmp_path / name), n_frames=3, size=(64, 64))
  videos, _ = read_300vw(str(tmp_path))
  clips = sample_clips(videos, clip_length=2, clips_per_video=3, seed=0, mirror=True)
  assert len(clips) == 2 * 3 * 2 * 2 and sum(c.mirror for c in clips) == len(clips) // 2
  loader = LoadClipBatch(videos, 2, 32, 1.3, {"a": 0, "b": 1})
  plain, points, _ = loader.load_clip(Clip(0, 1, False))
  mirrored, points_m, matrices_m = loader.load_clip(Clip(0, 1, False, mirror=True))
  np.testing.assert_array_equal(mirrored, plain[:, :, ::-1])
  np.testing.assert_allclose(points_m, flip_landmarks(points, 32), atol=1e-4)
  # The crop matrix takes video pixels to the mirrored crop (indices swapped afterwards).
  moved = transform_points(matrices_m[1], videos[0].landmarks[2])
  np.testing.assert_allclose(moved[flip_permutation(68)], points_m[1], atol=1e-4)
