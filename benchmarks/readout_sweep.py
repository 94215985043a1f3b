r"""Chooses a model's read-out (its system's `readout_fields`, changeable at load time): NME on
held-out labelled faces and raw tracking jitter on real videos for each setting.

  # The model's own read-out, then each --setting, then each --windows value of readout_window:
  python benchmarks/readout_sweep.py --checkpoint=/path/to/model \
    --faces=/path/to/ytf68:val --faces=/path/to/300w:train --limit=500 \
    --videos='/path/to/videos/*.mp4'
  # Named settings (RED-Net v1: the paper's cluster centre; v2: the regression peak's search
  # window around the coarse shape):
  python benchmarks/readout_sweep.py --checkpoint=... --faces=... \
    --setting=readout=cluster_centroid
  python benchmarks/readout_sweep.py --checkpoint=... --faces=... --windows= \
    --setting=search_window=0 --setting=search_window=9 --setting=search_window=15

--faces is an image folder and its manifest split (annotation boxes, as evaluate.py
--kind=image_folder); choose on faces the model was not trained on, never on the evaluation
set. Jitter: track.py's tracker (presence checks every 10th frame, no stabiliser), mean of
`metrics.jitter_per_frame` (`metrics.jitter`) over the 68 points within continuous tracks, % io.
"""

from __future__ import annotations

import glob
import os

from absl import app, flags

from rednet_jax.evaluation import metrics
from rednet_jax.evaluation import protocols
from rednet_jax.inference.landmark_model import Tracker, load_model
from rednet_jax.inference.video_tracking import track_video

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Exported model (default: shipped).")
_FACES = flags.DEFINE_multi_string("faces", [], "Image folder and split, 'root:split'.")
_LIMIT = flags.DEFINE_integer("limit", 0, "Faces per folder (0: all).")
_VIDEOS = flags.DEFINE_string("videos", None, "Glob of videos for jitter (optional).")
_WINDOWS = flags.DEFINE_list("windows", ["3", "5", "7", "9", "11", "15", "21"],
                             "readout_window values to measure (odd, px; '' for none).")
_SETTINGS = flags.DEFINE_multi_string("setting", [], "A read-out to measure: 'field=value,...' "
                                      "of the system's readout_fields; repeatable.")


def parse_setting(text: str) -> dict:
  """'readout=peak,readout_window=7' -> {'readout': 'peak', 'readout_window': 7}."""
  fields = {}
  for part in text.split(","):
    key, sep, value = (p.strip() for p in part.partition("="))
    if not sep or not key or not value:
      raise app.UsageError(f"--setting={text!r}: expected field=value[,field=value...]")
    fields[key] = int(value) if value.lstrip("-").isdigit() else value
  return fields


def main(argv):
  del argv
  folders = [f.rsplit(":", 1) if ":" in f else (f, "") for f in _FACES.value]
  videos = sorted(glob.glob(os.path.expanduser(_VIDEOS.value))) if _VIDEOS.value else []
  if not folders and not videos:
    raise app.UsageError("give --faces and/or --videos")
  own = load_model(_CHECKPOINT.value)
  fields = own.module.readout_fields
  variants = ([{}] + [parse_setting(t) for t in _SETTINGS.value]
              + [{"readout_window": int(w)} for w in _WINDOWS.value])
  for setting in variants:
    unknown = sorted(set(setting) - set(fields))
    if unknown:
      raise app.UsageError(f"--setting: {unknown} not read-out fields of "
                           f"{own.description['model']['name']} (those are {list(fields)})")
  header = [f"NME io {os.path.basename(r.rstrip('/'))}:{s or 'all'}" for r, s in folders]
  header += ["raw 68-point jitter (videos)"] if videos else []
  print(f"model {_CHECKPOINT.value or 'shipped'}; videos: "
        f"{', '.join(map(os.path.basename, videos)) or 'none'}\n")
  print("| read-out | " + " | ".join(header) + " |")
  print("| --- | " + " | ".join("---" for _ in header) + " |")
  for setting in variants:
    model = load_model(_CHECKPOINT.value, setting) if setting else own
    used = ", ".join(f"{k}={model.description['model'][k]}" for k in fields)
    cells = []
    for root, split in folders:
      result = protocols.evaluate_images(
          model, protocols.image_folder_faces(root, split, model.num_landmarks, _LIMIT.value))
      cells.append(f"{protocols.tables(result)['all']['nme_io']:.3f}")
    if videos:
      runs = []
      for path in videos:
        runs += [r for _, r in track_video(path, Tracker(model, verify_every=10)).runs()]
      cells.append(f"{metrics.jitter(runs)['jitter_io_mean']:.3f}")
    print(f"| {used}{'' if setting else ' (own)'} | " + " | ".join(cells) + " |",
          flush=True)


if __name__ == "__main__":
  app.run(main)
