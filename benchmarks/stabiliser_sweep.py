r"""Chooses the One-Euro stabiliser's settings: tracks labelled clips once (the tracking protocol
of `experiments/evaluate.py`), then filters the raw predictions with each setting of a grid and
prints NME and jitter per setting (the filter never changes what is tracked, so one tracking run
serves every setting).

  # Selection data: clips made from held-out stills (people the model never saw).
  python benchmarks/stabiliser_sweep.py --kind=still_clips --root=/path/to/ytf68 --split=val \
    --occluder_prob=0 --checkpoint=...
  # Report only (do not choose on the evaluation video):
  python benchmarks/stabiliser_sweep.py --kind=talking_face --root=/path/to/talking_face \
    --first_box=detector --checkpoint=...

Rows are sorted by jitter among settings that raise the NME by at most --max_nme_increase
(points of %); the first is the pick.
"""

from __future__ import annotations

import itertools

from absl import app, flags

from rednet_jax import protocols
from rednet_jax.inference import load_model
from rednet_jax.stabiliser import OneEuroSettings

_KIND = flags.DEFINE_enum("kind", "still_clips", ["still_clips", "talking_face"], "Data.")
_ROOT = flags.DEFINE_string("root", None, "Dataset folder.", required=True)
_SPLIT = flags.DEFINE_string("split", "val", "still_clips: manifest split.")
_OCCLUDER = flags.DEFINE_float("occluder_prob", 0.0, "still_clips: share of occluded clips.")
_FIRST_BOX = flags.DEFINE_enum("first_box", "annotation", ["annotation", "detector"], "Box.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Exported model (default: shipped).")
_LIMIT = flags.DEFINE_integer("limit", 0, "Clips / frames (0: all).")
_FPS = flags.DEFINE_float("fps", 25.0, "Frame rate the filter assumes.")
_MIN_CUTOFFS = flags.DEFINE_list("min_cutoffs", ["0.3", "0.5", "1", "1.5", "2", "3"], "Hz.")
_BETAS = flags.DEFINE_list("betas", ["0", "0.5", "1", "2", "5", "10", "20"], "Per face size/s.")
_MAX_INCREASE = flags.DEFINE_float("max_nme_increase", 0.1, "Allowed NME increase (points).")


def main(argv):
  del argv
  model = load_model(_CHECKPOINT.value)
  if _KIND.value == "still_clips":
    videos = protocols.still_clip_videos(_ROOT.value, _SPLIT.value, model.num_landmarks,
                                         _OCCLUDER.value, 128, _LIMIT.value)
  else:
    videos = protocols.talking_face_video(_ROOT.value, 0, _LIMIT.value)
  result = protocols.evaluate_videos(model, videos, _FIRST_BOX.value)
  raw = protocols.tables(result)["all"]
  print(f"model {model.path}; {_KIND.value} {_ROOT.value}; {raw['frames']} frames\n")
  print(f"raw: NME {raw['nme_io']:.3f}, jitter {raw['jitter_io']:.3f} (all points "
        f"{raw['jitter_io_all_points']:.3f}), ground truth's jitter {raw['gt_jitter_io']:.3f}\n")
  rows = []
  for cutoff, beta in itertools.product(_MIN_CUTOFFS.value, _BETAS.value):
    settings = OneEuroSettings(float(cutoff), float(beta))
    row = protocols.tables(result.stabilised(settings, _FPS.value))["all"]
    rows.append((settings, row))
  allowed = [r for r in rows if r[1]["nme_io"] <= raw["nme_io"] + _MAX_INCREASE.value]
  others = [r for r in rows if r not in allowed]
  print("| min cut-off (Hz) | beta | NME io | NME change | jitter (scored points) | jitter (all "
        "points) | within the NME limit |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for group, ok in ((allowed, "yes"), (others, "no")):
    for settings, row in sorted(group, key=lambda r: r[1]["jitter_io_all_points"]):
      print(f"| {settings.min_cutoff_hz:g} | {settings.beta:g} | {row['nme_io']:.3f} | "
            f"{row['nme_io'] - raw['nme_io']:+.3f} | {row['jitter_io']:.3f} | "
            f"{row['jitter_io_all_points']:.3f} | {ok} |")


if __name__ == "__main__":
  app.run(main)
