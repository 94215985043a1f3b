"""Evaluation protocols of the papers on exported models (`experiments/evaluate.py`).

Images: one crop per annotated face, from the annotation's box (the training crop rule) or the
detector's; z_0 is the mean shape.

Videos, the tracking protocol: frame 0 is cropped from the annotation's box of frame 0 (or the
detector's), every later frame from the model's own prediction for the frame before, which is
also its z_0; the LSTM carry goes from frame to frame. Nothing of frame t's annotation is used
for frame t or later. By default a tracked face is never re-detected (min_confidence 0), as in
the papers' protocol; `Tracker`'s re-detection can be switched on.

Every frame's errors are kept with the subsets it belongs to (300-VW category, 300-W
common/challenging, AFLW yaw bin, ...), and `tables` summarises them per subset.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Iterable, Iterator, Sequence

import numpy as np

from data_pipelines import aflw, talking_face, video_300vw
from data_pipelines.face_crops import face_box
from data_pipelines.image_folders import load_image_rgb, read_image_folder
from data_pipelines.landmarks import IBUG68_TO_7
from data_pipelines.pts import DataError
from data_pipelines.stills_to_clips import StillClipConfig, clip_from_still
from rednet_jax.evaluation import metrics
from rednet_jax.inference.detection import Face, FaceDetector
from rednet_jax.inference.landmark_model import LandmarkModel, Tracker
from rednet_jax.inference.stabiliser import OneEuroSettings, stabilise
from rednet_jax.inference.video_tracking import video_frames

NORMALISERS = ("io", "ip", "box")

# 300-W test folders (as distributed): common = LFPW + Helen test sets, challenging = iBUG.
SUBSETS_300W = {"lfpw": "common", "helen": "common", "ibug": "challenging"}


@dataclasses.dataclass
class Evaluated:
  """Predictions and ground truth of every evaluated frame, with per-frame subset names.

  For videos also the model's full prediction of each frame (`full_points`, e.g. 68 points
  where 7 are scored) and `track`, the id of the continuous track the frame belongs to (a new
  id at every video start, detection or frame without a face): jitter is measured within
  tracks only, and the stabiliser restarts at each."""
  points: list = dataclasses.field(default_factory=list)       # (L, 2) per frame
  landmarks: list = dataclasses.field(default_factory=list)    # (L, 2) per frame
  subsets: list = dataclasses.field(default_factory=list)      # tuple of names per frame
  missed: dict = dataclasses.field(default_factory=dict)       # subset -> frames without a face
  full_points: list = dataclasses.field(default_factory=list)  # videos: (L_model, 2) per frame
  track: list = dataclasses.field(default_factory=list)        # videos: track id per frame
  bad_samples: list = dataclasses.field(default_factory=list)  # skipped input, with the reason
  seconds: list = dataclasses.field(default_factory=list)      # videos: Tracker.update time of
                                                               # each frame after a video's first

  def add(self, points, landmarks, subsets: Sequence[str], full_points=None,
          track: int = -1) -> None:
    self.points.append(np.asarray(points, np.float32))
    self.landmarks.append(np.asarray(landmarks, np.float32))
    self.subsets.append(tuple(subsets))
    if full_points is not None:
      self.full_points.append(np.asarray(full_points, np.float32))
      self.track.append(track)

  def miss(self, subsets: Sequence[str]) -> None:
    for name in subsets:
      self.missed[name] = self.missed.get(name, 0) + 1

  def tracks(self, mask: np.ndarray | None = None) -> list[np.ndarray]:
    """Frame indices of each continuous track (optionally only frames in `mask`), in order."""
    ids = np.asarray(self.track)
    keep = np.ones(len(ids), bool) if mask is None else np.asarray(mask)
    return [np.flatnonzero((ids == t) & keep) for t in dict.fromkeys(ids[keep].tolist())]

  def stabilised(self, settings: OneEuroSettings, fps: float) -> "Evaluated":
    """The same frames with each track's predictions passed through the One-Euro filter
    (what `Tracker(stabiliser=...)` reports; the raw predictions drove the tracking)."""
    if len(self.full_points) != len(self.points):
      raise ValueError("stabilising needs the full prediction of every frame (videos only)")
    out = dataclasses.replace(self, points=list(self.points), full_points=list(self.full_points))
    for frames in self.tracks():
      smooth = stabilise([np.stack([self.full_points[i] for i in frames])], settings, fps)[0]
      for i, p in zip(frames, smooth):
        out.full_points[i] = p
        out.points[i] = _as_evaluated_points(p, len(self.landmarks[i]))
    return out


def _as_evaluated_points(points: np.ndarray, num_landmarks: int) -> np.ndarray:
  """A 68-point prediction compared with 7-point ground truth uses the 7 matching points."""
  points = np.asarray(points)
  if points.shape[0] == 68 and num_landmarks == 7:
    return points[list(IBUG68_TO_7)]
  return points


def evaluate_images(model: LandmarkModel, faces: Iterable[tuple[str, np.ndarray, Sequence[str]]],
                    first_box: str = "annotation", detector: FaceDetector | None = None,
                    batch_size: int = 32, skip_bad_samples: bool = False) -> Evaluated:
  """`faces`: (image path, ground truth (L, 2) 0-based, subsets). `first_box`: 'annotation'
  (the box of the ground truth, the training crop rule) or 'detector' (the detected face
  nearest the annotation; a face the detector misses counts in `missed`). An image that
  cannot be decoded is a DataError, or with `skip_bad_samples` left out and listed in
  `bad_samples`."""
  result = Evaluated()
  pending = []

  def flush():
    if pending:
      points, _ = model.predict([p[0] for p in pending], [p[1] for p in pending], batch_size)
      for (_, _, truth, subsets), p in zip(pending, points):
        result.add(_as_evaluated_points(p, len(truth)), truth, subsets)
      pending.clear()

  for path, truth, subsets in faces:
    try:
      image = load_image_rgb(path)
    except DataError as e:
      if not skip_bad_samples:
        raise
      result.bad_samples.append(str(e))
      continue
    box = _first_box(image, truth, first_box, detector)
    if box is None:
      result.miss(subsets)
      continue
    pending.append((image, (box.centre, box.side), truth, subsets))
    if len(pending) == batch_size:
      flush()
  flush()
  return result


def _first_box(image, truth, first_box: str, detector: FaceDetector | None) -> Face | None:
  if first_box == "annotation":
    if len(truth) != 68:
      raise ValueError(f"first_box='annotation' needs 68-point annotations (the crop rule's "
                       f"box); got {len(truth)} points: use first_box='detector'")
    centre, side = face_box(truth, 1.0)
    return Face(centre, side, 1.0)
  if first_box != "detector":
    raise ValueError(f"first_box must be 'annotation' or 'detector', got {first_box!r}")
  faces = (detector or FaceDetector()).detect(image)
  if not faces:
    return None
  centre = np.nanmean(truth, axis=0)
  return min(faces, key=lambda f: np.linalg.norm(f.centre - centre))


def evaluate_videos(model: LandmarkModel,
                    videos: Iterable[tuple[Iterator[np.ndarray], np.ndarray, Sequence[str]]],
                    first_box: str = "annotation", min_confidence: float = 0.0,
                    carry_state: bool = True, detector: FaceDetector | None = None) -> Evaluated:
  """The tracking protocol (module docstring). `videos`: (RGB frames, ground truth (T, L, 2),
  subsets). `carry_state=False` resets the LSTM carry at every frame (an ablation of the
  temporal module with the same weights). Frames where the tracker has no face (the detector
  found none) count in `missed`."""
  result = Evaluated()
  detector = detector or FaceDetector()
  track = 0
  for video in videos:
    frames, truth, subsets = video[:3]
    # Optional 4th item: landmarks of the annotation's box where the scored points (e.g. 7)
    # do not span the face (None: the scored points); 5th: a subset name per frame.
    box_truth = video[3] if len(video) > 3 and video[3] is not None else truth
    frame_subsets = video[4] if len(video) > 4 else None
    tracker = Tracker(model, detector, min_confidence)
    track += 1
    for t, frame in enumerate(frames):
      if t >= len(truth):
        break
      start = _first_box(frame, box_truth[t], first_box, detector) if t == 0 else None
      names = tuple(subsets) + ((frame_subsets[t],) if frame_subsets is not None else ())
      if t == 0 and start is None:
        result.miss(names)
        continue
      if not carry_state:
        tracker.forget_carry()
      detections = tracker.counts.detections
      started = time.perf_counter()
      points, _ = tracker.update(frame, face=start)
      if t > 0:
        result.seconds.append(time.perf_counter() - started)
      if points is None:
        result.miss(names)
        track += 1
        continue
      if t > 0 and tracker.counts.detections > detections:
        track += 1
      result.add(_as_evaluated_points(points, truth.shape[-2]), truth[t], names, points, track)
  return result


def tables(result: Evaluated, order: Sequence[str] = ()) -> dict[str, dict[str, float]]:
  """Per subset (in `order`, then the others by name, 'all' last): NME with each normaliser,
  FR and AUC at 8 % and 10 % (inter-ocular) and at 8 % and 4 % (box diagonal), per-group NME
  (68 points), frames, and frames without a face."""
  if not result.points:
    raise ValueError("nothing was evaluated (no frame had a face)")
  points, landmarks = np.stack(result.points), np.stack(result.landmarks)
  names = list(order) + sorted({n for s in result.subsets for n in s} - set(order))
  out = {}
  for name in names + ["all"]:
    mask = np.array([name == "all" or name in s for s in result.subsets])
    if not mask.any():
      continue
    io_errors = np.asarray(metrics.normalised_errors(points[mask], landmarks[mask], "io"))
    row = metrics.summarise(io_errors, "io")
    row["median_io"] = float(100 * np.median(io_errors))
    for kind in ("ip", "box"):
      errors = np.asarray(metrics.normalised_errors(points[mask], landmarks[mask], kind))
      row[f"nme_{kind}"] = float(100 * errors.mean())
    # Belmonte et al.'s protocol: box-diagonal NME, FR and AUC at 8 % and 4 %.
    for threshold in (0.08, 0.04):
      row[f"fr{round(100 * threshold):02d}_box"] = float(100 * (errors > threshold).mean())
      row[f"auc{round(100 * threshold):02d}_box"] = metrics.ced_auc(errors, threshold)
    if points.shape[1] == 68:
      row.update(metrics.group_errors(points[mask], landmarks[mask], "io"))
    row.update(_jitter_row(result, mask))
    if name == "all" and result.seconds:
      row["frames_per_second"] = len(result.seconds) / sum(result.seconds)
    row["missed"] = sum(result.missed.values()) if name == "all" else result.missed.get(name, 0)
    row["bad_samples"] = len(result.bad_samples)
    out[name] = row
  return out


def _jitter_row(result: Evaluated, mask: np.ndarray) -> dict[str, float]:
  """Videos: mean jitter (metrics.jitter_per_frame, % io) within continuous tracks of the
  scored points (`jitter_io`), of all the model's points (`jitter_io_all_points`), and of the
  ground truth's own scored points (`gt_jitter_io`)."""
  if len(result.track) != len(result.points):
    return {}
  tracks = [t for t in result.tracks(mask) if len(t) >= 3]
  if not tracks:
    return {}
  def mean(sequences):
    return float(np.concatenate([metrics.jitter_per_frame(np.stack(q)) for q in sequences]).mean())
  return {"jitter_io": mean([[result.points[i] for i in t] for t in tracks]),
          "jitter_io_all_points": mean([[result.full_points[i] for i in t] for t in tracks]),
          "gt_jitter_io": mean([[result.landmarks[i] for i in t] for t in tracks])}


def errors_by_subset(result: Evaluated) -> dict[str, np.ndarray]:
  """Inter-ocular NME of every frame per subset (for CED plots)."""
  points, landmarks = np.stack(result.points), np.stack(result.landmarks)
  errors = np.asarray(metrics.normalised_errors(points, landmarks, "io"))
  names = sorted({n for s in result.subsets for n in s})
  out = {n: errors[[n in s for s in result.subsets]] for n in names}
  out["all"] = errors
  return out


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
  columns = ["frames", "nme_io", "median_io", "nme_ip", "nme_box", "fr08_io", "fr10_io",
             "auc08_io", "auc10_io", "auc08_box", "fr08_box", "auc04_box", "fr04_box", "missed"]
  first = next(iter(rows.values()))
  columns += [c for c in ("jitter_io", "jitter_io_all_points", "gt_jitter_io", "bad_samples")
              if c in first and (c != "bad_samples" or first[c])]
  lines = ["| subset | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
  for name, row in rows.items():
    cells = [f"{row[c]:.0f}" if c in ("frames", "missed", "bad_samples") else
             f"{row[c]:.3f}" if c.startswith("auc") else f"{row[c]:.2f}" for c in columns]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  groups = [g for g in metrics.GROUPS_68 if f"nme_io_{g}" in next(iter(rows.values()))]
  if groups:
    lines += ["", "| subset | " + " | ".join(f"nme_io {g}" for g in groups) + " |",
              "|---" * (len(groups) + 1) + "|"]
    for name, row in rows.items():
      lines.append(f"| {name} | " + " | ".join(f"{row[f'nme_io_{g}']:.2f}" for g in groups)
                   + " |")
  return "\n".join(lines)


# Subsets listed first in tables, in this order; any others follow by name, then 'all'.
SUBSET_ORDER = ("category1", "category2", "category3", "lfpw", "helen", "ibug", "common",
                "challenging", "0-15", "15-30", "30-45", "45-90")


def _limited(items: list, limit: int) -> list:
  return items[:limit] if limit else items


def image_folder_faces(root: str, split: str = "", num_landmarks: int = 68, limit: int = 0,
                       bad_samples: list | None = None) -> Iterator[tuple]:
  """(path, landmarks, subsets) of an image folder's faces (one manifest split, or all): the
  split, and for 300-W's folders (lfpw, helen, ibug directly under root, as distributed or in
  the `300w` layout with lfpw/trainset, lfpw/testset, ...) the folder and 'common' /
  'challenging' (full is 'all'). With `bad_samples` (a list), faces whose files are missing or
  malformed are left out and their messages appended to it; without, they are DataErrors."""
  records, bad = read_image_folder(root, num_landmarks, split or None,
                                   skip_bad_samples=bad_samples is not None)
  if bad_samples is not None:
    bad_samples.extend(bad.messages)
  for r in _limited(records, limit):
    top = os.path.relpath(r.image, root).split(os.sep)[0].lower()
    subsets = [top, SUBSETS_300W[top]] if top in SUBSETS_300W else []
    if r.split:
      subsets.append(r.split)
    yield r.image, r.landmarks, subsets


def aflw_faces(sqlite_path: str, limit: int = 0) -> Iterator[tuple]:
  """(path, 7 points, [|yaw| bin]) of AFLW's faces that have all 7 points."""
  faces, left_is_image_left, _ = aflw.read_aflw(sqlite_path, skip_bad_samples=True)
  for face in _limited(faces, limit):
    yield face.image, face.seven_points(left_is_image_left), [aflw.yaw_bin(face.yaw_deg)]


def videos_300vw(root: str, which: str = "test", limit: int = 0) -> Iterator[tuple]:
  """(frames, landmarks, subsets) of 300-VW videos: `which` is 'test' (the challenge's
  categories 1-3), 'rednet_test' (RED-Net's 24 common + challenging), 'all', or 'id,id,...'.
  Subsets: the category and the RED-Net group of each video."""
  if which == "test":
    ids = [v for c in video_300vw.TEST_CATEGORIES.values() for v in c]
  elif which in ("all", "rednet_test"):
    ids = None
  else:
    ids = which.split(",")
  videos, _ = video_300vw.read_300vw(root, ids)
  split = video_300vw.rednet_split(videos)
  if which == "rednet_test":
    videos = split["test"]
  red = {v.video_id: name for name in ("common", "challenging") for v in split[name]}
  category = {v: c for c, ids in video_300vw.TEST_CATEGORIES.items() for v in ids}
  for video in _limited(videos, limit):
    subsets = [s for s in (category.get(video.video_id), red.get(video.video_id)) if s]
    yield video_frames(video.path), video.landmarks, subsets


def image_sequence_videos(root: str, split: str = "", num_landmarks: int = 68, limit: int = 0
                          ) -> Iterator[tuple]:
  """The image sequences of an image folder (`video_300vw.read_image_sequences`, e.g. ytf68's 3
  frames per video) as tracked videos: (frames, landmarks, [split], None, ['frame_0', ...]).
  The per-frame subsets separate the frames by how much of the sequence came before them (a
  local-motion model's 3-frame window is all real from frame_2 on)."""
  videos, _ = video_300vw.read_image_sequences(root, num_landmarks, split or None)
  for video in _limited(videos, limit):
    frames = (load_image_rgb(path) for path in video.frame_paths)
    names = [f"frame_{t}" for t in range(video.num_frames)]
    yield frames, video.landmarks, [split] if split else [], None, names


def still_clip_videos(root: str, split: str = "", num_landmarks: int = 68,
                      occluder_prob: float = 0.5, frame_size: int = 128, limit: int = 0
                      ) -> Iterator[tuple]:
  """One fixed T=10 clip per still of an image folder (`stills_to_clips`), as (frames,
  landmarks, [split]). The clips are the same for every model, and their camera paths the same
  for every `occluder_prob` (the occluder is drawn after the path), so occluder_prob=1 and 0 give
  the same clips with and without an occluder."""
  records, _ = read_image_folder(root, num_landmarks, split or None)
  config = StillClipConfig(out_size=frame_size, occluder_prob=occluder_prob)
  for i, record in enumerate(_limited(records, limit)):
    rng = np.random.default_rng(1000 + i)
    frames, landmarks = clip_from_still(load_image_rgb(record.image), record.landmarks, rng,
                                        config)
    yield iter(frames), landmarks, [record.split] if record.split else []


def talking_face_video(root: str, origin: int = 0, limit: int = 0) -> Iterator[tuple]:
  """The FGNET Talking Face video as one tracked video: (frames, the 7 scored points (T, 7, 2),
  ['talking_face'], FGNET's 68 points for the first frame's annotation box). The papers score
  RED-Net's 7 points on it (`data_pipelines.talking_face`)."""
  video = talking_face.read_talking_face(root, origin, limit)
  frames = (load_image_rgb(path) for path in video.frames)
  yield frames, video.seven_points, ["talking_face"], video.landmarks
