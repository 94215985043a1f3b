"""What the Tracker's confidence (mean peak landmark probability of the last response) reads on
faces and on crops that hold no face, to choose its re-detection threshold
(rednet_jax.inference.DEFAULT_MIN_CONFIDENCE). Prints a table of percentiles.

  python benchmarks/tracker_confidence.py --root=/path/to/ytf68 --split=val [--checkpoint=...]

Rows: crops by the annotation's box (the training rule); the same box moved by one face width
sideways (mostly background, part of the face); the same box at 3x the size (the face small);
random crops of the videos' frames far from any face are not available without labels, so
uniform noise stands in for 'nothing there'.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

from data_pipelines.face_crops import face_box
from data_pipelines.image_folders import load_image_rgb, read_image_folder
from rednet_jax.inference import load_model

_ROOT = flags.DEFINE_string("root", None, "Image folder with .pts beside the images.",
                            required=True)
_SPLIT = flags.DEFINE_string("split", "val", "Manifest split ('' for all).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Exported model (default: shipped).")


def main(argv):
  del argv
  model = load_model(_CHECKPOINT.value)
  records, _ = read_image_folder(_ROOT.value, model.num_landmarks, _SPLIT.value or None)
  images = [load_image_rgb(r.image) for r in records]
  boxes = [face_box(r.landmarks, 1.0) for r in records]
  rows = {
      "face (annotation box)": boxes,
      "box moved one face width sideways": [(c + [s, 0], s) for c, s in boxes],
      "box 3x larger (face small)": [(c, 3 * s) for c, s in boxes],
  }
  print("| crops | n | p5 | p50 | p95 |")
  print("| --- | --- | --- | --- | --- |")
  for name, row_boxes in rows.items():
    _, confidence = model.predict(images, row_boxes)
    print(f"| {name} | {len(confidence)} | " +
          " | ".join(f"{np.percentile(confidence, q):.3f}" for q in (5, 50, 95)) + " |")
  noise = [np.random.default_rng(i).integers(0, 256, (200, 200, 3), dtype=np.uint8)
           for i in range(64)]
  _, confidence = model.predict(noise, [(np.array([100.0, 100.0]), 120.0)] * len(noise))
  print(f"| uniform noise | {len(confidence)} | " +
        " | ".join(f"{np.percentile(confidence, q):.3f}" for q in (5, 50, 95)) + " |")


if __name__ == "__main__":
  app.run(main)
