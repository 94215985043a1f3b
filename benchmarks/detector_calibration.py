"""Calibrates the Haar face detector (rednet_jax/inference/detection.py) to the landmarks' crop rule and
prints a table: detection rate, the centre offset and side ratio that map a Haar box onto the
landmarks' box (medians), and how far the calibrated boxes land from the annotation's.

  python benchmarks/detector_calibration.py --root=/path/to/ytf68 --split=train

The medians it prints are the constants CENTRE_OFFSET and SIDE_RATIO in rednet_jax/inference/detection.py.
"""

from __future__ import annotations

import time

import numpy as np
from absl import app, flags

from data_pipelines.face_crops import face_box
from data_pipelines.image_folders import load_image_rgb, read_image_folder
from rednet_jax.inference.detection import FaceDetector

ROOT = flags.DEFINE_string("root", None, "image folder with .pts beside the images", required=True)
SPLIT = flags.DEFINE_string("split", "train", "manifest split ('' for all)")


def main(argv):
  del argv
  records, _ = read_image_folder(ROOT.value, split=SPLIT.value or None)
  # Uncalibrated: the raw Haar box.
  detector = FaceDetector(centre_offset=(0.0, 0.0), side_ratio=1.0)
  offsets, ratios, found, seconds = [], [], 0, 0.0
  for record in records:
    image = load_image_rgb(record.image)
    start = time.perf_counter()
    faces = detector.detect(image)
    seconds += time.perf_counter() - start
    if not faces:
      continue
    centre, side = face_box(record.landmarks, 1.0)
    # The detection closest to the annotated face.
    face = min(faces, key=lambda f: np.linalg.norm(f.centre - centre))
    if np.linalg.norm(face.centre - centre) > face.side:
      continue
    found += 1
    offsets.append((centre - face.centre) / face.side)
    ratios.append(side / face.side)
  offsets, ratios = np.array(offsets), np.array(ratios)
  offset, ratio = np.median(offsets, axis=0), float(np.median(ratios))
  spread = np.linalg.norm(offsets - offset, axis=1)
  print(f"| images | found | ms/image | centre offset (x, y) / side | side ratio | "
        f"centre error p50 / p90 (side) | ratio p10-p90 |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  print(f"| {len(records)} | {found} ({100 * found / len(records):.1f} %) | "
        f"{1000 * seconds / len(records):.1f} | ({offset[0]:.4f}, {offset[1]:.4f}) | {ratio:.4f} | "
        f"{np.median(spread):.3f} / {np.percentile(spread, 90):.3f} | "
        f"{np.percentile(ratios, 10):.3f}-{np.percentile(ratios, 90):.3f} |")


if __name__ == "__main__":
  app.run(main)
