r"""Evaluates an exported model under the papers' protocols and prints per-subset tables.

  # Images (ytf68 / 300-W folders): one crop per face from the annotation's box.
  python experiments/evaluate.py --kind=image_folder --root=/data/ytf68 --split=val --out=/tmp/ev
  python experiments/evaluate.py --kind=image_folder --root=/data/300w/test --out=/tmp/ev300w
  # 300-VW test videos, tracking protocol (box and z_0 of frame t from the prediction of t-1).
  python experiments/evaluate.py --kind=300vw --root=/data/300vw --videos=test --out=/tmp/ev300vw
  # Clips made from held-out stills, every clip crossed by an occluder, tracking protocol.
  python experiments/evaluate.py --kind=still_clips --root=/data/ytf68 --split=val \
    --occluder_prob=1 --out=/tmp/ev_occluded
  # AFLW (7 points; a 68-point model is compared on its 7 matching points), yaw bins.
  python experiments/evaluate.py --kind=aflw --root=/data/aflw/data/aflw.sqlite \
    --first_box=detector --out=/tmp/evaflw

Subsets: 300-VW categories 1/2/3 and the RED-Net common/challenging split; 300-W
lfpw/helen/ibug and common/challenging (full = 'all'); AFLW |yaw| 0-15/15-30/30-45/45-90; the
manifest split. Metrics: NME normalised by inter-ocular (outer eye corners), inter-pupil (eye
centres) and box diagonal, in %; failure rate and CED AUC at 8 % and 10 % (inter-ocular);
per-group NME. Writes `results.json`, `results.md` and `ced.png` into --out.
"""

import json
import os
import sys

import numpy as np
from absl import app, flags

from rednet_jax import protocols, reports
from rednet_jax.inference import load_model

_KIND = flags.DEFINE_enum("kind", None, ["image_folder", "300vw", "still_clips", "aflw"],
                          "What --root holds.", required=True)
_ROOT = flags.DEFINE_string("root", None, "Dataset folder (AFLW: aflw.sqlite).", required=True)
_OUT = flags.DEFINE_string("out", None, "Folder for results.json, results.md, ced.png.",
                           required=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Exported model folder (default: shipped).")
_SPLIT = flags.DEFINE_string("split", "", "image_folder / still_clips: manifest split ('': all).")
_VIDEOS = flags.DEFINE_string("videos", "test", "300vw: 'test' (categories 1-3), 'rednet_test' "
                              "(RED-Net's 24 common + challenging), 'all', or ids 'a,b,c'.")
_FIRST_BOX = flags.DEFINE_enum("first_box", "annotation", ["annotation", "detector"],
                               "Box of an image / a video's first frame.")
_MIN_CONFIDENCE = flags.DEFINE_float("min_confidence", 0.0, "Videos: re-detect below this "
                                     "confidence (0: never, the papers' protocol).")
_NO_CARRY = flags.DEFINE_bool("reset_temporal_state", False, "Videos: zero the LSTM state at "
                              "every frame (ablation of the temporal module).")
_OCCLUDER_PROB = flags.DEFINE_float("occluder_prob", 0.5, "still_clips: share of occluded clips.")
_CLIP_SIZE = flags.DEFINE_integer("clip_frame_size", 128, "still_clips: frame side in pixels.")
_LIMIT = flags.DEFINE_integer("limit", 0, "Evaluate only the first N images / videos (0: all).")


def _limited(items):
  return items[:_LIMIT.value] if _LIMIT.value else items


def _300vw_videos(root: str):
  from data_pipelines import video_300vw  # pylint: disable=g-import-not-at-top
  from rednet_jax.video_tracking import video_frames  # pylint: disable=g-import-not-at-top
  if _VIDEOS.value == "test":
    ids = [v for c in video_300vw.TEST_CATEGORIES.values() for v in c]
  elif _VIDEOS.value in ("all", "rednet_test"):
    ids = None
  else:
    ids = _VIDEOS.value.split(",")
  videos, _ = video_300vw.read_300vw(root, ids)
  if _VIDEOS.value == "rednet_test":
    videos = video_300vw.rednet_split(videos)["test"]
  split = video_300vw.rednet_split(videos)
  red = {v.video_id: name for name in ("common", "challenging") for v in split[name]}
  category = {v: c for c, ids in video_300vw.TEST_CATEGORIES.items() for v in ids}
  for video in _limited(videos):
    subsets = [s for s in (category.get(video.video_id), red.get(video.video_id)) if s]
    yield video_frames(video.path), video.landmarks, subsets


def _still_clips(root: str, num_landmarks: int):
  from data_pipelines.image_folders import load_image_rgb, read_image_folder  # pylint: disable=g-import-not-at-top
  from data_pipelines.stills_to_clips import StillClipConfig, clip_from_still  # pylint: disable=g-import-not-at-top
  records, _ = read_image_folder(root, num_landmarks, _SPLIT.value or None)
  config = StillClipConfig(out_size=_CLIP_SIZE.value, occluder_prob=_OCCLUDER_PROB.value)
  for i, record in enumerate(_limited(records)):
    # One fixed clip per still: the same clips for every model evaluated.
    rng = np.random.default_rng(1000 + i)
    frames, landmarks = clip_from_still(load_image_rgb(record.image), record.landmarks, rng,
                                        config)
    yield iter(frames), landmarks, [record.split] if record.split else []


def _aflw_faces(sqlite_path: str):
  from data_pipelines import aflw  # pylint: disable=g-import-not-at-top
  faces, left_is_image_left, _ = aflw.read_aflw(sqlite_path, skip_bad_samples=True)
  for face in _limited(faces):
    yield face.image, face.seven_points(left_is_image_left), [aflw.yaw_bin(face.yaw_deg)]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  model = load_model(_CHECKPOINT.value)
  root = os.path.expanduser(_ROOT.value)
  order = ()
  if _KIND.value == "image_folder":
    from data_pipelines.image_folders import read_image_folder  # pylint: disable=g-import-not-at-top
    records, _ = read_image_folder(root, model.num_landmarks, _SPLIT.value or None)
    result = protocols.evaluate_images(
        model, protocols.image_folder_faces(_limited(records), root), _FIRST_BOX.value)
    order = ("lfpw", "helen", "ibug", "common", "challenging")
  elif _KIND.value == "aflw":
    result = protocols.evaluate_images(model, _aflw_faces(root), _FIRST_BOX.value)
    order = ("0-15", "15-30", "30-45", "45-90")
  else:
    videos = (_300vw_videos(root) if _KIND.value == "300vw"
              else _still_clips(root, model.num_landmarks))
    result = protocols.evaluate_videos(model, videos, _FIRST_BOX.value, _MIN_CONFIDENCE.value,
                                       carry_state=not _NO_CARRY.value)
    order = ("category1", "category2", "category3", "common", "challenging")
  rows = protocols.tables(result, order)
  os.makedirs(_OUT.value, exist_ok=True)
  settings = {"checkpoint": model.path, "kind": _KIND.value, "root": root, "split": _SPLIT.value,
              "first_box": _FIRST_BOX.value, "reset_temporal_state": _NO_CARRY.value,
              "occluder_prob": _OCCLUDER_PROB.value if _KIND.value == "still_clips" else None,
              "command": " ".join(sys.argv)}
  with open(os.path.join(_OUT.value, "results.json"), "w", encoding="utf-8") as f:
    json.dump({"settings": settings, "subsets": rows}, f, indent=1)
  table = protocols.markdown_table(rows)
  with open(os.path.join(_OUT.value, "results.md"), "w", encoding="utf-8") as f:
    f.write(f"`{settings['command']}`\n\n{table}\n")
  reports.ced_plot(protocols.errors_by_subset(result), os.path.join(_OUT.value, "ced.png"))
  print(table)


if __name__ == "__main__":
  app.run(main)
