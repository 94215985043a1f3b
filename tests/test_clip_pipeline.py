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


def test_image_sequences_are_videos_of_their_frames_in_order(tmp_path):
  """ytf68's layout: three frames per YouTube video, rows in any order, frames of one video
  cropped like any clip; a gap in the frame numbers or a row without video is named."""
  import os  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  from data_pipelines.clip_pipeline import Clip, LoadClipBatch  # pylint: disable=g-import-not-at-top
  from data_pipelines.face_crops import transform_points  # pylint: disable=g-import-not-at-top
  from data_pipelines.image_folders import load_image_rgb  # pylint: disable=g-import-not-at-top
  from data_pipelines.pts import DataError  # pylint: disable=g-import-not-at-top
  from data_pipelines.video_300vw import read_image_sequences, read_video_frames  # pylint: disable=g-import-not-at-top
  mini = os.path.join(os.path.dirname(__file__), "fixtures", "ytf68_mini")
  root = tmp_path / "ytf"
  shutil.copytree(mini, root)
  lines = (root / "manifest.csv").read_text().splitlines()
  (root / "manifest.csv").write_text("\n".join([lines[0]] + lines[1:][::-1]) + "\n")  # reversed
  videos, _ = read_image_sequences(str(root))
  assert [(v.video_id, v.identity, v.num_frames) for v in videos] == [
      ("Adam_Sandler/0", "Adam_Sandler", 3), ("Aishwarya_Rai/0", "Aishwarya_Rai", 3)]
  held_out, _ = read_image_sequences(str(root), split="val")
  assert [v.video_id for v in held_out] == ["Aishwarya_Rai/0"]
  frames = read_video_frames(videos[1], 1, 2)
  for t, frame in zip((1, 2), frames):
    np.testing.assert_array_equal(
        frame, load_image_rgb(str(root / "images" / "Aishwarya_Rai" / f"Aishwarya_Rai_0{t}.jpg")))
  with pytest.raises(DataError, match="frames 2-3 asked of a 3-frame image sequence"):
    read_video_frames(videos[1], 2, 2)
  # Clips of 3 frames: the landmarks of each frame moved into its crop.
  loader = LoadClipBatch(videos, 3, 32, 1.3, {"Adam_Sandler": 0, "Aishwarya_Rai": 1})
  crops, points, matrices = loader.load_clip(Clip(0, 0, True))
  assert crops.shape == (3, 32, 32, 3)
  for t in range(3):
    np.testing.assert_allclose(transform_points(matrices[t], videos[0].landmarks[2 - t]),
                               points[t], atol=1e-4)
  batches, _ = clip_batch_dataset(videos, clip_length=3, batch_size=2, out_size=32,
                                  clips_per_video=1, seed=0, mirror=True)
  assert len(batches) == 4 and batches[0]["image"].shape == (2, 3, 32, 32, 3)
  # Bad manifests name the file and the video.
  rows = [line.split(",") for line in lines]
  rows[2][3] = "5"                                                     # frames 0, 5, 2
  (root / "manifest.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
  with pytest.raises(DataError, match=r"manifest.csv: video '0' of 'Adam_Sandler' has frames "
                                      r"\[0, 2, 5\]"):
    read_image_sequences(str(root))
  rows[2][3], rows[2][2] = "1", ""
  (root / "manifest.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
  with pytest.raises(DataError, match="Adam_Sandler_01.jpg: an image sequence needs identity, "
                                      "video and frame"):
    read_image_sequences(str(root))


def test_image_sequences_as_stage_data(tmp_path):
  import os  # pylint: disable=g-import-not-at-top
  from data_pipelines.pts import DataError  # pylint: disable=g-import-not-at-top
  from rednet_jax.training.configs import base_stage  # pylint: disable=g-import-not-at-top
  from rednet_jax.training.input_pipeline import build_stage_data  # pylint: disable=g-import-not-at-top
  config = base_stage("motion")
  config.data.update(kind="image_sequences",
                     root=os.path.join(os.path.dirname(__file__), "fixtures", "ytf68_mini"),
                     clip_length=3, clips_per_video=1, batch_size=1, size=32, clip_flip=True,
                     workers=0)
  config.eval.clips_per_video = 1
  stage = build_stage_data(config, str(tmp_path))
  # One training video: forward, reversed, and both mirrored.
  assert stage.steps_per_epoch == 4 and "1 training videos, 1 held out" in stage.description
  batch = stage.train[0]
  assert batch["image"].shape == (1, 3, 32, 32, 3) and batch["crop_matrix"].shape == (1, 3, 2, 3)
  held_out = list(stage.eval)
  assert len(held_out) == 1 and held_out[0]["valid"].sum() == 1
  config.data.clip_length = 4
  with pytest.raises(DataError, match="no training image sequence has data.clip_length=4 "
                                      r"frames \(longest: 3\)"):
    build_stage_data(config, str(tmp_path))
