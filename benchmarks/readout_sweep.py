r"""Chooses the sub-pixel read-out's window (`model.readout_window`, changeable at load time):
NME on held-out labelled faces and raw tracking jitter on real videos for each window, and the
paper's cluster-centre read-out for reference.

  python benchmarks/readout_sweep.py --checkpoint=/path/to/model \
    --faces=/path/to/ytf68:val --faces=/path/to/300w:train --limit=500 \
    --videos='/path/to/videos/*.mp4'

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
_WINDOWS = flags.DEFINE_list("windows", ["3", "5", "7", "9", "11", "15", "21"], "Odd, px.")


def main(argv):
  del argv
  folders = [f.rsplit(":", 1) if ":" in f else (f, "") for f in _FACES.value]
  videos = sorted(glob.glob(os.path.expanduser(_VIDEOS.value))) if _VIDEOS.value else []
  if not folders and not videos:
    raise app.UsageError("give --faces and/or --videos")
  variants = [("cluster_centroid", None)] + [("probability_centroid", int(w))
                                             for w in _WINDOWS.value]
  header = [f"NME io {os.path.basename(r.rstrip('/'))}:{s or 'all'}" for r, s in folders]
  header += ["raw 68-point jitter (videos)"] if videos else []
  print(f"model {_CHECKPOINT.value or 'shipped'}; videos: "
        f"{', '.join(map(os.path.basename, videos)) or 'none'}\n")
  print("| read-out | window | " + " | ".join(header) + " |")
  print("| --- | --- | " + " | ".join("---" for _ in header) + " |")
  for readout, window in variants:
    model = load_model(_CHECKPOINT.value, {"readout": readout, "readout_window": window})
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
    print(f"| {readout} | {window or '-'} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
  app.run(main)
