"""Tracking a whole video file with `inference.Tracker`: per-frame `.pts` in the 300-VW layout,
an overlay MP4, and the jitter of the tracked landmarks (what `experiments/track.py` runs)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Iterator

import cv2
import numpy as np

from data_pipelines.pts import DataError, write_pts
from rednet_jax.evaluation import metrics
from rednet_jax.inference.landmark_model import PartTimer, Tracker
from rednet_jax.inference.mp4 import Mp4Writer


def video_frames(path: str, max_frames: int = 0) -> Iterator[np.ndarray]:
  """RGB uint8 frames of a video file until the decoder stops (or `max_frames`). A file that
  cannot be opened raises DataError naming it."""
  if not os.path.isfile(path):
    raise DataError(f"{path}: no such video file")
  capture = cv2.VideoCapture(path)
  try:
    if not capture.isOpened():
      raise DataError(f"{path}: OpenCV cannot open this video (not a video, or an unsupported "
                      "codec)")
    count = 0
    while not max_frames or count < max_frames:
      ok, frame = capture.read()
      if not ok:
        break
      count += 1
      yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
  finally:
    capture.release()


def video_info(path: str) -> dict:
  capture = cv2.VideoCapture(path)
  try:
    return {"fps": float(capture.get(cv2.CAP_PROP_FPS) or 25.0),
            "frames_in_header": int(capture.get(cv2.CAP_PROP_FRAME_COUNT))}
  finally:
    capture.release()


@dataclasses.dataclass
class TrackResult:
  video: str
  points: list                 # per frame: (L, 2) float32 frame pixels, or None (no face)
  confidence: np.ndarray       # (N,)
  seconds: np.ndarray          # (N,) tracking time per frame (decoding and writing excluded)
  frames_in_header: int
  counts: dict                 # the tracker's detector runs and re-detections
  detector_frames: list = dataclasses.field(default_factory=list)  # where a detection was used
  max_frames: int = 0          # the run stopped after this many frames (0: the whole video)
  raw_points: list | None = None  # with a stabiliser: the model's own points per frame
  # Frames after the first: seconds per part (the tracker's, and decode / write_pts / draw /
  # encode) and end to end (decoding to writing).
  part_seconds: dict = dataclasses.field(default_factory=dict)
  wall_seconds: float = 0.0

  def runs(self, min_length: int = 3) -> list[tuple[int, np.ndarray]]:
    """Continuous tracks: runs of consecutive frames with landmarks, a new run at every
    detection (a restart may jump to another face); (first frame, (T >= min_length, L, 2))."""
    runs, current, start = [], [], 0
    starts = set(self.detector_frames)
    for i, p in enumerate(self.points + [None]):
      if p is None or i in starts:
        if len(current) >= min_length:
          runs.append((start, np.stack(current)))
        current, start = ([], i + 1) if p is None else ([p], i)
      else:
        current.append(p)
    return runs

  def summary(self) -> dict:
    tracked = sum(p is not None for p in self.points)
    warnings = []
    if self.frames_in_header > len(self.points) and not self.max_frames:
      warnings.append(f"{self.video}: the header says {self.frames_in_header} frames, "
                      f"{len(self.points)} decoded (truncated or damaged file)")
    out = {"video": self.video, "frames": len(self.points), "frames_in_header":
           self.frames_in_header, "frames_with_face": tracked,
           "frames_without_face": len(self.points) - tracked,
           "detector_runs": self.counts["detections"], "lost": self.counts["lost"],
           "verifications": self.counts["verifications"],
           "verification_failed": self.counts["verification_failed"],
           "scene_cuts": self.counts["scene_cuts"],
           "detector_frames": self.detector_frames, "warnings": warnings,
           # Frame 0 includes compiling the model and the first detection.
           "first_frame_seconds": float(self.seconds[0]),
           "fps": (len(self.points) - 1) / max(float(self.seconds[1:].sum()), 1e-9)}
    if len(self.points) > 1 and self.wall_seconds:
      n = len(self.points) - 1
      out["fps_end_to_end"] = n / self.wall_seconds
      out["ms_per_frame"] = {part: round(1e3 * s / n, 3)
                             for part, s in sorted(self.part_seconds.items())}
    runs = [run for _, run in self.runs()]
    if runs:
      out.update(metrics.jitter(runs))
    if runs and self.raw_points is not None:
      raw = dataclasses.replace(self, points=self.raw_points, raw_points=None)
      out.update({f"raw_{k}": v for k, v in metrics.jitter([r for _, r in raw.runs()]).items()})
    return out


def track_video(path: str, tracker: Tracker, out_dir: str | None = None, max_frames: int = 0,
                overlay: bool = True) -> TrackResult:
  """Tracks every frame of `path`. With `out_dir`: `annot/000001.pts` ... (1-based frame
  numbers and 1-based coordinates, as 300-VW; frames without a face get no file),
  `overlay.mp4`, `jitter.png` and `summary.json`. The split of time per part is measured
  from the second frame on (the first compiles the model)."""
  info = video_info(path)
  points, confidence, seconds, writer, detector_frames = [], [], [], None, []
  raw_points = [] if tracker.stabiliser is not None else None
  if out_dir:
    os.makedirs(os.path.join(out_dir, "annot"), exist_ok=True)
  timer, frames, index, wall_start = PartTimer(), video_frames(path, max_frames), 0, None
  while True:
    with timer("decode"):
      frame = next(frames, None)
    if frame is None:
      break
    detections = tracker.counts.detections
    start = time.perf_counter()
    p, c = tracker.update(frame)
    seconds.append(time.perf_counter() - start)
    if tracker.counts.detections > detections:
      detector_frames.append(index)
    points.append(p)
    confidence.append(c)
    if raw_points is not None:
      raw_points.append(None if p is None else tracker.raw_points)
    if out_dir:
      if p is not None:
        with timer("write_pts"):
          write_pts(os.path.join(out_dir, "annot", f"{index + 1:06d}.pts"), p)
      if overlay:
        writer = writer or Mp4Writer(os.path.join(out_dir, "overlay.mp4"), info["fps"])
        with timer("draw"):
          image = _draw(frame, p, c)
        with timer("encode"):
          writer.write(image)
    if index == 0:                    # from here on: steady state
      timer.clear()
      tracker.timer.clear()
      wall_start = time.perf_counter()
    index += 1
  if writer is not None:
    with timer("encode"):
      writer.close()                  # flushes the encoder's last frames
  wall = time.perf_counter() - wall_start if wall_start is not None else 0.0
  if not points:
    raise DataError(f"{path}: the video has no decodable frame")
  result = TrackResult(path, points, np.asarray(confidence, np.float32), np.asarray(seconds),
                       info["frames_in_header"], dataclasses.asdict(tracker.counts),
                       detector_frames, max_frames, raw_points,
                       {**tracker.timer.seconds, **timer.seconds}, wall)
  if out_dir:
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as f:
      json.dump(result.summary(), f, indent=1)
    jitter_figure(result, os.path.join(out_dir, "jitter.png"))
  return result


def _draw(frame: np.ndarray, points: np.ndarray | None, confidence: float) -> np.ndarray:
  image = frame.copy()
  radius = max(1, round(min(frame.shape[:2]) / 200))
  if points is not None:
    for x, y in points:
      cv2.circle(image, (int(round(x)), int(round(y))), radius, (255, 0, 0), -1, cv2.LINE_AA)
  label = f"conf {confidence:.2f}" if points is not None else "no face"
  cv2.putText(image, label, (5, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
              cv2.LINE_AA)
  return image


def jitter_figure(result: TrackResult, path: str) -> None:
  """Per-frame jitter (acceleration / inter-ocular, %, axis from 0) and confidence over the
  video; frames where the detector ran (the first, and re-detections after a lost face) are
  marked with dashed lines, frames without a face shaded."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  values = np.full(len(result.points), np.nan)
  for start, run in result.runs():
    values[start + 1:start + len(run) - 1] = metrics.jitter_per_frame(run)
  fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 4), dpi=120, sharex=True)
  top.plot(values, lw=1)
  top.set_ylim(bottom=0, top=max(1e-3, float(np.nanmax(values)) * 1.05)
               if np.isfinite(values).any() else 1.0)
  top.set_ylabel("jitter (% io)")
  top.set_title(os.path.basename(result.video))
  bottom.plot(result.confidence, lw=1, color="tab:orange")
  bottom.set_ylim(0, 1)
  bottom.set_ylabel("confidence")
  bottom.set_xlabel("frame")
  for i, frame in enumerate(result.detector_frames):
    for ax in (top, bottom):
      ax.axvline(frame, color="tab:red", lw=0.8, ls="--",
                 label="detector" if i == 0 and ax is top else None)
  missing = [i for i, p in enumerate(result.points) if p is None]
  for i in missing:
    for ax in (top, bottom):
      ax.axvspan(i - 0.5, i + 0.5, color="0.85", lw=0)
  if result.detector_frames:
    top.legend(fontsize=7, loc="upper right")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
