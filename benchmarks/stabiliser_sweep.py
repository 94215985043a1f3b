r"""Chooses the One-Euro stabiliser's settings: tracks once, then filters the raw predictions
with each setting of a grid and prints accuracy cost and jitter per setting (the filter never
changes what is tracked, so one tracking run serves every setting).

  # Selection data: real, unlabelled face videos (none of them Talking Face).
  python benchmarks/stabiliser_sweep.py --kind=videos --videos='/path/to/videos/*.mp4'
  # Labelled clips made from held-out stills (synthetic motion, faster than real video).
  python benchmarks/stabiliser_sweep.py --kind=still_clips --root=/path/to/ytf68 --split=val \
    --occluder_prob=0 --checkpoint=...
  # Report only (do not choose on the evaluation video):
  python benchmarks/stabiliser_sweep.py --kind=talking_face --root=/path/to/talking_face \
    --first_box=detector --checkpoint=...

Accuracy cost without labels (`--kind=videos`): a filter trades flicker for lag, and lag shows
as distance from where the face really was. Unlabelled, "where it was" is estimated offline by a
zero-phase smoother of the raw track (`stabiliser.zero_phase_reference`: a local quadratic
fit over --reference_window frames centred on each frame: no lag, flicker averaged out); the
cost of a setting (`stabiliser.lag_cost`) is how much farther its output lies from that
reference than the raw prediction does (mean point distance, % of the outer-eye-corner
distance). On labelled video the table shows this estimate beside the true
NME change. Rows are sorted by 68-point jitter among settings whose cost (the NME change where
there are labels) is at most --max_nme_increase points; the first is the pick.
"""

from __future__ import annotations

import glob
import itertools
import os

import numpy as np
from absl import app, flags

from rednet_jax.evaluation import metrics
from rednet_jax.evaluation import protocols
from rednet_jax.inference.landmark_model import Tracker, load_model
from rednet_jax.inference.stabiliser import OneEuroSettings, lag_cost, stabilise
from rednet_jax.inference.video_tracking import track_video, video_info

_KIND = flags.DEFINE_enum("kind", "videos", ["videos", "still_clips", "talking_face"], "Data.")
_ROOT = flags.DEFINE_string("root", None, "still_clips / talking_face: dataset folder.")
_VIDEOS = flags.DEFINE_string("videos", None, "videos: glob of video files.")
_SPLIT = flags.DEFINE_string("split", "val", "still_clips: manifest split.")
_OCCLUDER = flags.DEFINE_float("occluder_prob", 0.0, "still_clips: share of occluded clips.")
_FIRST_BOX = flags.DEFINE_enum("first_box", "annotation", ["annotation", "detector"], "Box.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Exported model (default: shipped).")
_LIMIT = flags.DEFINE_integer("limit", 0, "Clips / frames (0: all).")
_FPS = flags.DEFINE_float("fps", 25.0, "Labelled kinds: frame rate the filter assumes.")
_MIN_CUTOFFS = flags.DEFINE_list("min_cutoffs", ["0.3", "0.5", "1", "1.5", "2", "3"], "Hz.")
_BETAS = flags.DEFINE_list("betas", ["0", "0.5", "1", "2", "5", "10", "20"], "Per face size/s.")
_MAX_INCREASE = flags.DEFINE_float("max_nme_increase", 0.1, "Allowed NME increase (points).")
_REFERENCE_WINDOW = flags.DEFINE_integer("reference_window", 11, "Frames of the zero-phase "
                                         "reference's local quadratic fit (odd).")


def video_tracks(model, paths: list[str], window: int) -> list[tuple[np.ndarray, float]]:
  """Raw continuous tracks (T >= window, L, 2) of each video, with its frame rate; the tracker
  as track.py runs it (presence checks every 10th frame)."""
  out = []
  for path in paths:
    result = track_video(path, Tracker(model, verify_every=10))
    fps = video_info(path)["fps"]
    out += [(run, fps) for _, run in result.runs(min_length=window)]
  return out


def main(argv):
  del argv
  model = load_model(_CHECKPOINT.value)
  window = _REFERENCE_WINDOW.value
  if window < 3 or window % 2 == 0:
    raise app.UsageError(f"--reference_window must be odd and >= 3, got {window}")
  result = None
  if _KIND.value == "videos":
    if not _VIDEOS.value:
      raise app.UsageError("--kind=videos needs --videos")
    paths = sorted(glob.glob(os.path.expanduser(_VIDEOS.value)))
    if not paths:
      raise app.UsageError(f"--videos={_VIDEOS.value}: no files")
    tracks = video_tracks(model, paths, window)
    source = ", ".join(os.path.basename(p) for p in paths)
  else:
    if not _ROOT.value:
      raise app.UsageError(f"--kind={_KIND.value} needs --root")
    if _KIND.value == "still_clips":
      videos = protocols.still_clip_videos(_ROOT.value, _SPLIT.value, model.num_landmarks,
                                           _OCCLUDER.value, 128, _LIMIT.value)
    else:
      videos = protocols.talking_face_video(_ROOT.value, 0, _LIMIT.value)
    result = protocols.evaluate_videos(model, videos, _FIRST_BOX.value)
    tracks = [(np.stack([result.full_points[i] for i in frames]), _FPS.value)
              for frames in result.tracks() if len(frames) >= window]
    source = _ROOT.value
  if not tracks:
    raise SystemExit(f"no continuous track of {window} frames or more")
  raw_tracks = [t for t, _ in tracks]
  print(f"model {model.path}; {_KIND.value}: {source}; {len(tracks)} tracks, "
        f"{sum(map(len, raw_tracks))} frames\n")
  print(f"raw: 68-point jitter {metrics.jitter(raw_tracks)['jitter_io_mean']:.3f}")
  raw = None
  if result is not None:
    raw = protocols.tables(result)["all"]
    print(f"raw: NME {raw['nme_io']:.3f}, ground truth's jitter {raw['gt_jitter_io']:.3f}")
  rows = []
  for cutoff, beta in itertools.product(_MIN_CUTOFFS.value, _BETAS.value):
    settings = OneEuroSettings(float(cutoff), float(beta))
    smooth = [stabilise([t], settings, fps)[0] for t, fps in tracks]
    row = {"jitter": metrics.jitter(smooth)["jitter_io_mean"],
           "cost": lag_cost(smooth, raw_tracks, window)}
    if result is not None:
      row["nme_change"] = (protocols.tables(result.stabilised(settings, _FPS.value))["all"]
                           ["nme_io"] - raw["nme_io"])
    # With labels the true NME change decides; without, the estimate.
    row["limit"] = row.get("nme_change", row["cost"])
    rows.append((settings, row))
  allowed = [r for r in rows if r[1]["limit"] <= _MAX_INCREASE.value]
  others = [r for r in rows if r not in allowed]
  print("\n| min cut-off (Hz) | beta | 68-point jitter | cost estimate (reference) | "
        "NME change (labels) | within the limit |")
  print("| --- | --- | --- | --- | --- | --- |")
  for group, ok in ((allowed, "yes"), (others, "no")):
    for settings, row in sorted(group, key=lambda r: r[1]["jitter"]):
      nme = f"{row['nme_change']:+.3f}" if "nme_change" in row else "-"
      print(f"| {settings.min_cutoff_hz:g} | {settings.beta:g} | {row['jitter']:.3f} | "
            f"{row['cost']:+.3f} | {nme} | {ok} |")


if __name__ == "__main__":
  app.run(main)
