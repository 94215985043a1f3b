"""Annotated videos: 300-VW's `<root>/<video_id>/vid.avi` with `<root>/<video_id>/annot/000001.pts
...`, and image sequences (an image folder whose manifest gives each image a `video` and a
`frame`, e.g. ytf68: three frames of each YouTube video, one fixed crop).

Frames are decoded with OpenCV; every frame must have its annotation (`annot/%06d.pts`,
1-based frame numbers, iBUG points). The identity of a 300-VW video is its id (the papers'
choice for 300-VW); an image sequence's is its person. The challenge's test categories are
below; the other 50 videos are its training set.
"""

from __future__ import annotations

import dataclasses
import os

import cv2
import numpy as np

from data_pipelines.image_folders import BadSamples, load_image_rgb, read_image_folder
from data_pipelines.pts import DataError, read_pts

CATEGORY_1 = ("114 124 125 126 150 158 401 402 505 506 507 508 509 510 511 514 515 518 519 520 "
              "521 522 524 525 537 538 540 541 546 547 548").split()
CATEGORY_2 = "203 208 211 212 213 214 218 224 403 404 405 406 407 408 409 412 550 551 553".split()
CATEGORY_3 = "410 411 516 517 526 528 529 530 531 533 557 558 559 562".split()
TEST_CATEGORIES = {"category1": CATEGORY_1, "category2": CATEGORY_2, "category3": CATEGORY_3}


@dataclasses.dataclass(frozen=True)
class VideoRecord:
  """One annotated video; `landmarks[i]` belongs to frame i (0-based), 0-based pixels. A video
  stored as images has their paths in `frame_paths` (in order; `path` is their folder)."""
  path: str
  video_id: str
  landmarks: np.ndarray                     # (num_frames, L, 2) float32
  frame_paths: tuple[str, ...] = ()
  person: str = ""                          # identity when it is not the video (image sequences)

  @property
  def identity(self) -> str:
    return self.person or self.video_id

  @property
  def num_frames(self) -> int:
    return len(self.landmarks)


def count_frames(path: str) -> int:
  capture = cv2.VideoCapture(path)
  try:
    if not capture.isOpened():
      raise DataError(f"{path}: cannot open video")
    return int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
  finally:
    capture.release()


def read_frames(path: str, start: int, count: int) -> np.ndarray:
  """`count` consecutive RGB frames from 0-based `start`, uint8 (count, H, W, 3).

  Opens its own capture per call, so it is safe from Grain's reader threads.
  """
  capture = cv2.VideoCapture(path)
  try:
    if not capture.isOpened():
      raise DataError(f"{path}: cannot open video")
    if start:
      capture.set(cv2.CAP_PROP_POS_FRAMES, start)
    frames = []
    for i in range(count):
      ok, frame = capture.read()
      if not ok:
        raise DataError(f"{path}: cannot decode frame {start + i} (truncated or corrupt video)")
      frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    return np.stack(frames)
  finally:
    capture.release()


def read_video_frames(video: VideoRecord, start: int, count: int) -> list[np.ndarray]:
  """`count` consecutive RGB frames of `video` from 0-based `start` (a video file's, or an image
  sequence's images, which may differ in size)."""
  if not video.frame_paths:
    return list(read_frames(video.path, start, count))
  if start + count > len(video.frame_paths):
    raise DataError(f"{video.path}: frames {start}-{start + count - 1} asked of a "
                    f"{len(video.frame_paths)}-frame image sequence")
  return [load_image_rgb(p) for p in video.frame_paths[start:start + count]]


def read_image_sequences(root: str, num_points: int = 68, split: str | None = None,
                         skip_bad_samples: bool = False) -> tuple[list[VideoRecord], BadSamples]:
  """The image sequences of an image folder (`data_pipelines.image_folders`) whose manifest
  has `identity`, `video` and `frame` columns: one VideoRecord per (identity, video), frames
  in `frame` order (numbers 0, 1, ... without gaps or repeats), optionally of one `split`.
  The video id is `<identity>/<video>`, the identity the person."""
  records, bad = read_image_folder(root, num_points, split, skip_bad_samples)
  groups: dict[tuple[str, str], list] = {}
  for r in records:
    if not r.identity or not r.video or r.frame < 0:
      raise DataError(f"{r.image}: an image sequence needs identity, video and frame in "
                      f"{os.path.join(root, 'manifest.csv')}; got identity={r.identity!r}, "
                      f"video={r.video!r}, frame={r.frame}")
    groups.setdefault((r.identity, r.video), []).append(r)
  videos = []
  for (identity, video), frames in sorted(groups.items()):
    frames.sort(key=lambda r: r.frame)
    numbers = [r.frame for r in frames]
    if numbers != list(range(len(frames))):
      raise DataError(f"{os.path.join(root, 'manifest.csv')}: video {video!r} of {identity!r} "
                      f"has frames {numbers}; expected 0 to {len(frames) - 1}, each once")
    videos.append(VideoRecord(
        path=os.path.dirname(frames[0].image), video_id=f"{identity}/{video}",
        landmarks=np.stack([r.landmarks for r in frames]).astype(np.float32),
        frame_paths=tuple(r.image for r in frames), person=identity))
  return videos, bad


def read_video_dir(video_dir: str, num_points: int = 68) -> VideoRecord:
  """Reads one 300-VW video folder; errors name the file that is missing or wrong."""
  video = os.path.join(video_dir, "vid.avi")
  annot = os.path.join(video_dir, "annot")
  if not os.path.isfile(video):
    raise DataError(f"{video}: missing video file")
  if not os.path.isdir(annot):
    raise DataError(f"{annot}: missing annotation folder")
  frames = count_frames(video)
  if frames <= 0:
    raise DataError(f"{video}: video has no frames")
  landmarks = np.empty((frames, num_points, 2), np.float32)
  for i in range(frames):
    pts = os.path.join(annot, f"{i + 1:06d}.pts")
    if not os.path.isfile(pts):
      raise DataError(f"{pts}: missing annotation for frame {i + 1} of {video}")
    landmarks[i] = read_pts(pts, num_points)
  extra = os.path.join(annot, f"{frames + 1:06d}.pts")
  if os.path.isfile(extra):
    raise DataError(f"{extra}: annotation beyond the video's last frame ({frames}); "
                    "the video may be truncated")
  return VideoRecord(path=video, video_id=os.path.basename(os.path.normpath(video_dir)),
                     landmarks=landmarks)


def read_300vw(root: str, video_ids: list[str] | None = None, num_points: int = 68,
               skip_bad_samples: bool = False) -> tuple[list[VideoRecord], BadSamples]:
  """The videos under `root` (all, or `video_ids`), sorted by id."""
  if not os.path.isdir(root):
    raise DataError(f"{root}: 300-VW directory does not exist")
  available = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  ids = available if video_ids is None else [str(v) for v in video_ids]
  bad = BadSamples()
  records = []
  for video_id in ids:
    try:
      if video_id not in available:
        raise DataError(f"{os.path.join(root, video_id)}: video folder does not exist")
      records.append(read_video_dir(os.path.join(root, video_id), num_points))
    except DataError as e:
      bad.handle(e, skip_bad_samples)
  if not records:
    raise DataError(f"{root}: no 300-VW videos found (expected <id>/vid.avi and <id>/annot/)")
  return records, bad


def rednet_split(videos: list[VideoRecord]) -> dict[str, list[VideoRecord]]:
  """The RED-Net-style 90/24 split recorded in `splits/300vw_rednet_24_test.json`:
  {'train', 'common', 'challenging', 'test'} (test = common + challenging). Read the file's
  caveat on identity overlap before publishing numbers."""
  import json  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(__file__), "splits", "300vw_rednet_24_test.json")
  with open(path, encoding="utf-8") as f:
    split = json.load(f)
  common, challenging = set(split["common"]), set(split["challenging"])
  return {"train": [v for v in videos if v.video_id not in common | challenging],
          "common": [v for v in videos if v.video_id in common],
          "challenging": [v for v in videos if v.video_id in challenging],
          "test": [v for v in videos if v.video_id in common | challenging]}


def challenge_split(videos: list[VideoRecord]) -> dict[str, list[VideoRecord]]:
  """The 300-VW challenge's split (Belmonte et al.'s): {'challenge_train' (the 50 videos in no
  test category), 'category1', 'category2', 'category3', 'challenge_test' (all 64)}."""
  tested = {v for ids in TEST_CATEGORIES.values() for v in ids}
  out = {"challenge_train": [v for v in videos if v.video_id not in tested]}
  for name, ids in TEST_CATEGORIES.items():
    members = set(ids)
    out[name] = [v for v in videos if v.video_id in members]
  out["challenge_test"] = [v for v in videos if v.video_id in tested]
  return out
