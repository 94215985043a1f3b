r"""`experiments/track.py`'s tracker on a set of videos: frames/s, frames with and without a
face, detector runs, scene cuts and jitter (raw and stabilised) in one table; with --labels, how
well "face reported" matches frames that hold the face being tracked.

  python benchmarks/track_videos.py --videos='/path/to/videos/*.mp4' \
    [--checkpoint=...] [--verify_every=10] [--labels=benchmarks/face_labels.json]

Every video is tracked twice with the same model and settings, stabiliser off and on (the
stabiliser never changes which frames have a face or where the tracker crops, so the two runs
differ only in the reported points); frames/s is the faster run's, end to end per frame
(detection, crop, model, stabiliser; decoding excluded), after the first frame (compilation).
Jitter is the mean over frames of |p(t+1) - 2 p(t) + p(t-1)| averaged over the 68 points, in %
of the predicted outer-eye-corner distance, within continuous tracks only (a detection starts a
new one).

Labels (JSON): {"<video file name>": {"segments": [[first, last, "what the frames show"], ...]}}
(frame ranges inclusive); the table gives, per segment, the frames reported with a face.
"""

from __future__ import annotations

import glob
import json
import os

from absl import app, flags

from rednet_jax.inference.landmark_model import Tracker, load_model
from rednet_jax.inference.stabiliser import OneEuroFilter
from rednet_jax.inference.video_tracking import track_video, video_info

_VIDEOS = flags.DEFINE_string("videos", None, "Glob of video files.", required=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Exported model (default: shipped).")
_VERIFY_EVERY = flags.DEFINE_integer("verify_every", 10, "Tracker.verify_every (0: never).")
_MIN_CONFIDENCE = flags.DEFINE_float("min_confidence", None, "Re-detect the face below this "
                                     "tracking confidence (default: the model's).")
_PRESENCE = flags.DEFINE_float("presence_threshold", None, "Tracker.presence_threshold "
                               "(default: the model's).")
_LABELS = flags.DEFINE_string("labels", None, "JSON of frame ranges with the face (see above).")


def presence(result, segments) -> str:
  """Share of each labelled segment's frames reported with a face."""
  parts = []
  for first, last, content in segments:
    reported = sum(p is not None for p in result.points[first:last + 1])
    parts.append(f"{content}: {reported}/{min(last, len(result.points) - 1) - first + 1}")
  return "; ".join(parts)


def tracker_settings(model) -> tuple[float, float]:
  return (model.min_confidence if _MIN_CONFIDENCE.value is None else _MIN_CONFIDENCE.value,
          model.presence_threshold if _PRESENCE.value is None else _PRESENCE.value)


def main(argv):
  del argv
  model = load_model(_CHECKPOINT.value)
  labels = {}
  if _LABELS.value:
    with open(_LABELS.value, encoding="utf-8") as f:
      labels = json.load(f)
  paths = sorted(glob.glob(os.path.expanduser(_VIDEOS.value)))
  if not paths:
    raise SystemExit(f"--videos={_VIDEOS.value}: no files")
  min_confidence, presence_threshold = tracker_settings(model)
  print(f"model: {model.path}; verify_every={_VERIFY_EVERY.value}, "
        f"min_confidence={min_confidence}, presence_threshold={presence_threshold}\n")
  print("| video | frames (header) | with face | detector runs | scene cuts | frames/s | "
        "jitter raw mean / p95 | jitter stabilised mean / p95 | frames with a face, per segment |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for path in paths:
    runs = {}
    for stabilised in (False, True):
      stabiliser = OneEuroFilter(fps=video_info(path)["fps"]) if stabilised else None
      tracker = Tracker(model, min_confidence=min_confidence, stabiliser=stabiliser,
                        verify_every=_VERIFY_EVERY.value, presence_threshold=presence_threshold)
      result = track_video(path, tracker)
      runs[stabilised] = (result, result.summary())
    raw, smooth = runs[False][1], runs[True][1]
    fps = max(raw["fps"], smooth["fps"])
    name = os.path.basename(path)
    label = labels.get(name)
    present = ""
    if label:
      present = presence(runs[False][0], label["segments"])
    jitter = lambda s: (f"{s['jitter_io_mean']:.2f} / {s['jitter_io_p95']:.2f}"
                        if "jitter_io_mean" in s else "-")
    print(f"| {name} | {raw['frames']} ({raw['frames_in_header']}) | {raw['frames_with_face']} | "
          f"{raw['detector_runs']} | {raw['scene_cuts']} | {fps:.1f} | {jitter(raw)} | "
          f"{jitter(smooth)} | {present} |")
    for warning in raw["warnings"]:
      print(f"warning: {warning}")


if __name__ == "__main__":
  app.run(main)
