"""LFW for the identity stage: `<root>/<Person_Name>/<Person_Name>_0001.jpg` (the folder is the
identity) plus a landmark CSV.

LFW ships without landmarks; RED-Net used a third-party 7-point annotation. This project reads
any such annotation once converted to one CSV file:

  image,x0,y0,x1,y1,...                 header; `image` relative to root
  Aaron_Eckhart/Aaron_Eckhart_0001.jpg,103.2,112.5,...

with N points as 0-based (x, y) pixels of the 250x250 LFW image, in iBUG 7-point order for
N = 7 (image-left eye outer, inner, image-right eye inner, outer, nose tip, mouth left, right).
"""

from __future__ import annotations

import csv
import os

import numpy as np

from data_pipelines.image_folders import BadSamples, FaceRecord
from data_pipelines.pts import DataError


def read_lfw(root: str, landmarks_csv: str, num_points: int = 7,
             skip_bad_samples: bool = False) -> tuple[list[FaceRecord], BadSamples]:
  if not os.path.isdir(root):
    raise DataError(f"{root}: LFW directory does not exist")
  if not os.path.isfile(landmarks_csv):
    raise DataError(f"{landmarks_csv}: landmark CSV does not exist")
  expected = ["image"] + [f"{a}{i}" for i in range(num_points) for a in "xy"]
  bad = BadSamples()
  records = []
  with open(landmarks_csv, newline="", encoding="utf-8") as f:
    reader = csv.reader(f)
    header = next(reader, None)
    if header != expected:
      raise DataError(f"{landmarks_csv}: header must be {','.join(expected[:5])},... for "
                      f"{num_points} points, got {header if header is None else ','.join(header[:5])}...")
    for line, row in enumerate(reader, start=2):
      try:
        if len(row) != len(expected):
          raise DataError(f"{landmarks_csv} line {line}: {len(row)} fields, expected "
                          f"{len(expected)}")
        image = os.path.join(root, row[0])
        if not os.path.isfile(image):
          raise DataError(f"{landmarks_csv} line {line}: image {row[0]!r} does not exist")
        try:
          points = np.array(row[1:], np.float32).reshape(num_points, 2)
        except ValueError as e:
          raise DataError(f"{landmarks_csv} line {line}: coordinates are not numbers") from e
        identity = os.path.basename(os.path.dirname(image))
        records.append(FaceRecord(image=image, landmarks=points, identity=identity))
      except DataError as e:
        bad.handle(e, skip_bad_samples)
  if not records:
    raise DataError(f"{landmarks_csv}: no usable rows")
  return records, bad
