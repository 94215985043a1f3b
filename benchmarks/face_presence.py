r"""Calibrates the tracker's face-presence threshold (`Tracker.face_score`: the model's
confidence on a box from the mean shape, fresh LSTM state) and shows how it separates faces from
non-faces. Prints percentiles per kind of box and the threshold that keeps --face_recall of the
faces; --write stores it in the model's model.json as `presence_threshold` (the Tracker's
face-presence check) and `min_confidence` (below it a tracked face counts as lost and is
re-detected).

  python benchmarks/face_presence.py --root=/path/to/300w --split=train --checkpoint=... \
    [--check_split=test] [--write]

Faces: each annotated face by its annotation's box (the training crop rule). Non-faces: the
same images with the box moved 1-1.5 face sides in a random direction and resized by 0.7-1.3
(background, hair, shoulders, black border), and boxes of uniform noise. Calibrate on a
training split; `--check_split` reports the same on held-out faces. Tracking on real video with
labels is measured by benchmarks/track_videos.py.
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags

from data_pipelines.face_crops import face_box
from data_pipelines.image_folders import load_image_rgb, read_image_folder
from rednet_jax.inference.landmark_model import MODEL_FILE, load_model

_ROOT = flags.DEFINE_string("root", None, "Image folder with .pts beside the images.",
                            required=True)
_SPLIT = flags.DEFINE_string("split", "train", "Manifest split to calibrate on.")
_CHECK_SPLIT = flags.DEFINE_string("check_split", "", "Held-out split to report too.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Exported model (default: shipped).")
_LIMIT = flags.DEFINE_integer("limit", 400, "Faces per split (0: all).")
_RECALL = flags.DEFINE_float("face_recall", 0.99, "Share of faces the threshold keeps.")
_WRITE = flags.DEFINE_bool("write", False, "Store the threshold in the model's model.json.")


def scores(model, root: str, split: str, limit: int, seed: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  records, _ = read_image_folder(root, model.num_landmarks, split or None)
  if limit:
    records = [records[i] for i in rng.permutation(len(records))[:limit]]
  images = [load_image_rgb(r.image) for r in records]
  faces = [face_box(r.landmarks, 1.0) for r in records]
  moved = []
  for centre, side in faces:
    angle, distance = rng.uniform(0, 2 * np.pi), rng.uniform(1.0, 1.5) * side
    moved.append((centre + distance * np.array([np.cos(angle), np.sin(angle)]),
                  side * rng.uniform(0.7, 1.3)))
  noise = [rng.integers(0, 256, size=(model.size * 2, model.size * 2, 3), dtype=np.uint8)
           for _ in range(min(len(records), 100))]
  noise_boxes = [(np.array([model.size - 0.5] * 2), model.size / model.box_scale)] * len(noise)
  return {"face (annotation box)": model.predict(images, faces, 32)[1],
          "box moved 1-1.5 face sides": model.predict(images, moved, 32)[1],
          "uniform noise": model.predict(noise, noise_boxes, 32)[1]}


def main(argv):
  del argv
  model = load_model(_CHECKPOINT.value)
  calibration = scores(model, _ROOT.value, _SPLIT.value, _LIMIT.value, 0)
  threshold = float(np.quantile(calibration["face (annotation box)"], 1 - _RECALL.value))
  print(f"model {model.path}: presence threshold {threshold:.3f} keeps "
        f"{100 * _RECALL.value:g} % of the {_SPLIT.value} faces\n")
  print("| split | boxes | n | p1 | p5 | p50 | p95 | share >= threshold |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- |")
  splits = [(_SPLIT.value, calibration)]
  if _CHECK_SPLIT.value:
    splits.append((_CHECK_SPLIT.value, scores(model, _ROOT.value, _CHECK_SPLIT.value,
                                              _LIMIT.value, 1)))
  for split, table in splits:
    for name, values in table.items():
      p = np.percentile(values, [1, 5, 50, 95])
      print(f"| {split} | {name} | {len(values)} | " + " | ".join(f"{v:.3f}" for v in p)
            + f" | {100 * (values >= threshold).mean():.1f} % |")
  if _WRITE.value:
    path = os.path.join(model.path, MODEL_FILE)
    with open(path, encoding="utf-8") as f:
      description = json.load(f)
    description["presence_threshold"] = description["min_confidence"] = round(threshold, 4)
    with open(path, "w", encoding="utf-8") as f:
      json.dump(description, f, indent=1)
    print(f"\nwrote presence_threshold = min_confidence = {threshold:.4f} into {path}")


if __name__ == "__main__":
  app.run(main)
