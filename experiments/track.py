r"""Tracks the face in a video with the streaming `Tracker` and writes what it found.

  python experiments/track.py --video=face.mp4 --out=/tmp/track_face
  python experiments/track.py --video=face.mp4 --checkpoint=/path/to/exported_model --out=...

Writes into --out: `annot/000001.pts` ... (300-VW layout: one iBUG file per frame, 1-based frame
numbers and 1-based pixel coordinates; frames without a face get no file), `overlay.mp4`
(unless --nooverlay), `jitter.png` (per-frame landmark acceleration / inter-ocular distance,
and confidence) and `summary.json` (frames, frames without a face, detector runs, checks of the
tracked face and scene cuts, frames/s of tracking and end to end, milliseconds per frame in
each part of the loop, jitter mean and p95 in % of the inter-ocular distance within continuous
tracks, of the reported and, when stabilised, of the raw points; a warning when the video
decodes fewer frames than its header says). By default the reported landmarks are smoothed by
the One-Euro stabiliser (--nostabilise for the raw ones) and the detector checks every 10th
frame and every scene cut that a face is still being tracked (--verify_every=0: never).
Without --checkpoint the shipped model is used; a --checkpoint folder with model.onnx
(`export.py --format=onnx`) runs on onnxruntime.
"""

import json
import sys

from absl import app, flags

from data_pipelines.pts import DataError
from rednet_jax import cli
from rednet_jax.inference.landmark_model import Tracker
from rednet_jax.inference.stabiliser import OneEuroFilter
from rednet_jax.inference.video_tracking import track_video, video_info

_VIDEO = flags.DEFINE_multi_string("video", None, "Video file(s) to track.", required=True)
_LOAD_MODEL = cli.define_model_flags()
_OUT = flags.DEFINE_string("out", None, "Output folder (one subfolder per video when several).",
                           required=True)
_MIN_CONFIDENCE = flags.DEFINE_float("min_confidence", None, "Re-detect the face below this "
                                     "tracking confidence (default: the model's).")
_MAX_FRAMES = flags.DEFINE_integer("max_frames", 0, "Stop after this many frames (0: all).")
_STABILISE = flags.DEFINE_bool("stabilise", True, "Smooth the reported landmarks with the "
                               "One-Euro filter (--nostabilise: the model's raw points).")
_OVERLAY = flags.DEFINE_bool("overlay", True, "Write overlay.mp4 (--nooverlay: only the .pts, "
                              "jitter.png and summary.json).")
_VERIFY_EVERY = flags.DEFINE_integer("verify_every", 10, "Check with the detector every N "
                                     "frames, and at scene cuts, that the tracked face is still "
                                     "there (0: never).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  model = _LOAD_MODEL()
  failed = 0
  for video in _VIDEO.value:
    out = _OUT.value
    if len(_VIDEO.value) > 1:
      out = f"{out}/{video.rsplit('/', 1)[-1].rsplit('.', 1)[0]}"
    stabiliser = (OneEuroFilter(fps=video_info(video)["fps"]) if _STABILISE.value else None)
    tracker = Tracker(model, min_confidence=_MIN_CONFIDENCE.value, stabiliser=stabiliser,
                      verify_every=_VERIFY_EVERY.value)
    try:
      result = track_video(video, tracker, out, _MAX_FRAMES.value, overlay=_OVERLAY.value)
    except DataError as e:
      print(f"error: {e}", file=sys.stderr)
      failed += 1
      continue
    summary = result.summary()
    for warning in summary["warnings"]:
      print(f"warning: {warning}", file=sys.stderr)
    print(json.dumps(summary))
  if failed:
    print(f"{failed} of {len(_VIDEO.value)} videos could not be tracked", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  cli.run(main)
