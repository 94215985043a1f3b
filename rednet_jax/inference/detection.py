"""First-frame face detection with the frontal-face Haar cascade that ships inside
opencv-python(-headless) 4.x (nothing is downloaded), mapped onto the crop rule the models were
trained with.

The models crop a square of side `box_scale` x the landmarks' extent around the landmarks' box
centre (`data_pipelines.face_crops.face_box`). A Haar box is a different box: it is calibrated
to that rule by a centre offset and a side ratio, measured on annotated faces with
`benchmarks/detector_calibration.py` (values below: ytf68 `train`, see that script).
"""

from __future__ import annotations

import dataclasses
import os

import cv2
import numpy as np

CASCADE_FILE = "haarcascade_frontalface_default.xml"

# Measured by benchmarks/detector_calibration.py on the ytf68 train split (2,551 of 2,649 faces
# found): the landmarks' box centre is the Haar box's centre + CENTRE_OFFSET x its side, the
# landmarks' larger extent SIDE_RATIO x its side (medians; calibrated centres land 0.074 of the
# side from the annotation's at the median, 0.152 at p90).
CENTRE_OFFSET = (0.0077, 0.1667)
SIDE_RATIO = 0.88


@dataclasses.dataclass(frozen=True)
class Face:
  """A face box in the landmarks' convention: centre (x, y) in 0-based pixels and the side of
  the landmarks' extent (multiply by box_scale for the crop)."""
  centre: np.ndarray
  side: float
  score: float            # the cascade's level weight (larger: more certain)


class FaceDetector:
  """`detect(image_rgb) -> [Face, ...]`, largest first."""

  def __init__(self, min_size_fraction: float = 0.1, centre_offset=CENTRE_OFFSET,
               side_ratio: float = SIDE_RATIO):
    path = os.path.join(cv2.data.haarcascades, CASCADE_FILE)
    self._cascade = cv2.CascadeClassifier(path)
    if self._cascade.empty():
      raise RuntimeError(f"{path}: could not load OpenCV's Haar cascade (opencv-python 5.x "
                         "wheels no longer ship it; install opencv-python-headless<5)")
    self.min_size_fraction = min_size_fraction
    self.centre_offset = np.asarray(centre_offset, np.float64)
    self.side_ratio = float(side_ratio)

  def raw_boxes(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cascade's own boxes (N, 4) as x, y, w, h, and their level weights (N,)."""
    grey = cv2.cvtColor(np.asarray(image_rgb), cv2.COLOR_RGB2GRAY)
    grey = cv2.equalizeHist(grey)
    min_side = max(20, int(self.min_size_fraction * min(grey.shape)))
    boxes, _, weights = self._cascade.detectMultiScale3(
        grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side),
        outputRejectLevels=True)
    if len(boxes) == 0:
      return np.zeros((0, 4)), np.zeros((0,))
    return np.asarray(boxes, np.float64), np.asarray(weights, np.float64).reshape(-1)

  def detect(self, image_rgb: np.ndarray) -> list[Face]:
    boxes, weights = self.raw_boxes(image_rgb)
    faces = []
    for (x, y, w, h), weight in zip(boxes, weights):
      side = float(max(w, h))
      centre = np.array([x + (w - 1) / 2.0, y + (h - 1) / 2.0]) + self.centre_offset * side
      faces.append(Face(centre=centre, side=side * self.side_ratio, score=float(weight)))
    return sorted(faces, key=lambda f: -f.side)
