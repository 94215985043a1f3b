"""The FGNET Talking Face video: consecutive frames, each with 68 points in FGNET's own layout.

Layout (as released):

  <root>/frames/franck_00000.jpg ... franck_NNNNN.jpg   the frames, in order
  <root>/frames/franck_00000.pts ...                    one `.pts` beside each (iBUG file format,
                                                        n_points: 68, float pixels)

The 68 points are FGNET's markup (from XM2VTS), not iBUG's: jaw 0-14, brows 15-26, the
subject's right eye 27 outer corner / 28 top / 29 inner corner / 30 bottom / 31 pupil, the left
eye 32 outer / 33 top / 34 inner / 35 bottom / 36 pupil, nose 37-47 and 67 (tip), mouth 48-65
(corners 48 and 54). Only RED-Net's 7 points have a counterpart in iBUG's scheme:

  iBUG 36, 39, 42, 45, 30, 48, 54  (eye corners, nose tip, mouth corners)
  TF   27, 29, 34, 32, 67, 48, 54

so a 68-point iBUG model is scored on those 7 (the papers' protocol), normalised by the
outer-eye-corner distance |TF27 - TF32|. `tests/test_talking_face.py` checks the mapping on a
committed frame of the video against a model's iBUG prediction.

The files do not say whether coordinates are 0- or 1-based; `origin` says which to assume
(default 0: FGNET's points are floats measured on the image, not iBUG's 1-based convention).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re

import numpy as np

from data_pipelines.pts import DataError, read_pts

TALKING_FACE_TO_7: tuple[int, ...] = (27, 29, 34, 32, 67, 48, 54)
_FRAME = re.compile(r"^(.*?)(\d+)\.(jpg|jpeg|png|bmp)$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class TalkingFace:
  """The video's frame files in order and their annotations, 0-based (x, y) pixels."""
  frames: list[str]
  landmarks: np.ndarray          # (T, 68, 2) FGNET layout

  @property
  def seven_points(self) -> np.ndarray:
    """(T, 7, 2) in RED-Net's 7-point order (iBUG 36, 39, 42, 45, 30, 48, 54)."""
    return self.landmarks[:, TALKING_FACE_TO_7]


def read_talking_face(root: str, origin: int = 0, limit: int = 0) -> TalkingFace:
  """Reads the frames under `root/frames` (or `root` itself) in frame-number order. Every frame
  needs its `.pts` with 68 points, and the numbers must be consecutive: a gap or a bad file is
  a DataError naming it (the tracking protocol needs every frame)."""
  if origin not in (0, 1):
    raise ValueError(f"origin must be 0 or 1, got {origin}")
  folder = os.path.join(root, "frames") if os.path.isdir(os.path.join(root, "frames")) else root
  if not os.path.isdir(folder):
    raise DataError(f"{root}: Talking Face folder does not exist")
  numbered = []
  for path in glob.glob(os.path.join(folder, "*")):
    match = _FRAME.match(os.path.basename(path))
    if match:
      numbered.append((int(match.group(2)), path))
  numbered.sort()
  if not numbered:
    raise DataError(f"{folder}: no numbered frames (expected e.g. franck_00000.jpg with a .pts "
                    "beside each)")
  if limit:
    numbered = numbered[:limit]
  for (a, path_a), (b, _) in zip(numbered, numbered[1:]):
    if b != a + 1:
      raise DataError(f"{folder}: frame numbers jump from {a} to {b} after "
                      f"{os.path.basename(path_a)}; the protocol needs consecutive frames")
  landmarks = []
  for _, path in numbered:
    pts = os.path.splitext(path)[0] + ".pts"
    if not os.path.isfile(pts):
      raise DataError(f"{pts}: missing annotation for {os.path.basename(path)}")
    # read_pts assumes iBUG's 1-based pixels and subtracts 1.
    landmarks.append(read_pts(pts, 68) + (1 - origin))
  return TalkingFace([p for _, p in numbered], np.stack(landmarks).astype(np.float32))
