"""300-VW layout reader on a tiny video written with OpenCV."""

import os

import cv2
import numpy as np
import pytest

from data_pipelines.pts import DataError, write_pts
from data_pipelines.video_300vw import (CATEGORY_1, CATEGORY_2, CATEGORY_3, read_300vw,
                                        read_frames)

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]      # RGB of frames 0, 1, 2


def write_video(video_dir, n_frames=3, annotate=None, size=(48, 64)):
  os.makedirs(os.path.join(video_dir, "annot"), exist_ok=True)
  path = os.path.join(video_dir, "vid.avi")
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 25, (size[1], size[0]))
  assert writer.isOpened()
  for i in range(n_frames):
    rgb = np.zeros((*size, 3), np.uint8)
    rgb[:] = COLOURS[i % 3]
    writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
  writer.release()
  for i in range(n_frames if annotate is None else annotate):
    spread = np.stack([np.arange(68) % 9, np.arange(68) // 9], -1) * 3.0   # a 9x8 grid
    write_pts(os.path.join(video_dir, "annot", f"{i + 1:06d}.pts"), spread + 10.0 + i)
  return path


def test_reads_frames_annotations_and_identity(tmp_path):
  write_video(str(tmp_path / "001"))
  write_video(str(tmp_path / "002"))
  records, bad = read_300vw(str(tmp_path))
  assert [r.video_id for r in records] == ["001", "002"] and bad.count == 0
  video = records[0]
  assert video.num_frames == 3 and video.identity == "001"
  np.testing.assert_allclose(video.landmarks[:, 0, 0], [10.0, 11.0, 12.0])  # frame order kept
  frames = read_frames(video.path, 1, 2)                                    # random access
  assert frames.shape == (2, 48, 64, 3)
  for frame, colour in zip(frames, COLOURS[1:]):
    np.testing.assert_allclose(frame.reshape(-1, 3).mean(0), colour, atol=12)


def test_missing_annotations_and_bad_videos_are_named(tmp_path):
  write_video(str(tmp_path / "good"))
  write_video(str(tmp_path / "gap"), annotate=2)
  with pytest.raises(DataError, match=r"gap/annot/000003.pts: missing annotation for frame 3"):
    read_300vw(str(tmp_path))
  records, bad = read_300vw(str(tmp_path), skip_bad_samples=True)
  assert [r.video_id for r in records] == ["good"] and bad.count == 1
  broken = tmp_path / "broken"
  (broken / "annot").mkdir(parents=True)
  (broken / "vid.avi").write_bytes(b"RIFF....not a video")
  with pytest.raises(DataError, match="broken/vid.avi: cannot open video|broken/vid.avi: video "
                                      "has no frames"):
    read_300vw(str(tmp_path), video_ids=["broken"])
  with pytest.raises(DataError, match="good/vid.avi: cannot decode frame 3"):
    read_frames(records[0].path, 1, 3)
  with pytest.raises(DataError, match="404: video folder does not exist"):
    read_300vw(str(tmp_path), video_ids=["good", "404"])
  with pytest.raises(DataError, match="does not exist"):
    read_300vw(str(tmp_path / "nowhere"))


def test_challenge_categories_are_the_64_test_videos():
  ids = CATEGORY_1 + CATEGORY_2 + CATEGORY_3
  assert (len(CATEGORY_1), len(CATEGORY_2), len(CATEGORY_3)) == (31, 19, 14)
  assert len(set(ids)) == 64


def test_rednet_split_is_24_test_videos_from_the_categories():
  from data_pipelines.video_300vw import VideoRecord, rednet_split
  ids = CATEGORY_1 + CATEGORY_2 + CATEGORY_3 + [f"{900 + i}" for i in range(50)]
  videos = [VideoRecord(path="", video_id=v, landmarks=np.zeros((1, 68, 2))) for v in ids]
  split = rednet_split(videos)
  assert (len(split["common"]), len(split["challenging"]), len(split["train"])) == (9, 15, 90)
  assert {v.video_id for v in split["common"]} <= set(CATEGORY_1)
  assert {v.video_id for v in split["challenging"]} <= set(CATEGORY_2 + CATEGORY_3)
