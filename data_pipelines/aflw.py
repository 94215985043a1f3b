"""AFLW: `aflw.sqlite` (21 points per face, yaw/pitch/roll) next to its `flickr/` image folders.

Tables read: FaceImages(file_id, filepath), Faces(face_id, file_id), FacePose(face_id, roll,
pitch, yaw in radians), FeatureCoords(face_id, feature_id 1..21, x, y). Points an annotator
could not see are absent; they come back as NaN with `visible` False.

RED-Net trains AFLW on its 7 landmarks (eye corners, nose tip, mouth corners), in the project's
iBUG order: image-left eye outer/inner, image-right eye inner/outer, nose tip, image-left and
image-right mouth corner. Which of AFLW's "Left*" features lies on the image's left is measured
on the data itself (most faces decide it) rather than assumed; an undecidable file is an error.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3

import numpy as np

from data_pipelines.image_folders import BadSamples
from data_pipelines.pts import DataError

AFLW_FEATURES = (
    "LeftBrowLeftCorner", "LeftBrowCenter", "LeftBrowRightCorner", "RightBrowLeftCorner",
    "RightBrowCenter", "RightBrowRightCorner", "LeftEyeLeftCorner", "LeftEyeCenter",
    "LeftEyeRightCorner", "RightEyeLeftCorner", "RightEyeCenter", "RightEyeRightCorner",
    "LeftEar", "NoseLeft", "NoseCenter", "NoseRight", "RightEar", "MouthLeftCorner",
    "MouthCenter", "MouthRightCorner", "ChinCenter")           # feature_id = index + 1
# 7 points when AFLW's "Left" is the image's left (0-based indices into AFLW_FEATURES).
_SEVEN_IF_LEFT_IS_IMAGE_LEFT = (6, 8, 9, 11, 14, 17, 19)
_SEVEN_IF_LEFT_IS_SUBJECT_LEFT = (11, 9, 8, 6, 14, 19, 17)
YAW_BINS_DEG = ((0, 15), (15, 30), (30, 45), (45, 90))


@dataclasses.dataclass(frozen=True)
class AFLWFace:
  image: str
  points21: np.ndarray        # (21, 2) float32, NaN where not annotated
  visible: np.ndarray         # (21,) bool
  yaw_deg: float
  pitch_deg: float
  roll_deg: float
  face_id: int

  def seven_points(self, left_is_image_left: bool) -> np.ndarray:
    order = _SEVEN_IF_LEFT_IS_IMAGE_LEFT if left_is_image_left else _SEVEN_IF_LEFT_IS_SUBJECT_LEFT
    return self.points21[list(order)]


def yaw_bin(yaw_deg: float) -> str:
  """The paper's |yaw| groups: '0-15', '15-30', '30-45', '45-90'."""
  a = abs(yaw_deg)
  for low, high in YAW_BINS_DEG:
    if a < high or high == 90:
      return f"{low}-{high}"
  raise AssertionError


def left_is_image_left(faces: list[AFLWFace], path: str) -> bool:
  """Decides AFLW's left/right convention from the faces with both eye centres."""
  left, right = AFLW_FEATURES.index("LeftEyeCenter"), AFLW_FEATURES.index("RightEyeCenter")
  both = [f for f in faces if f.visible[left] and f.visible[right]]
  if not both:
    raise DataError(f"{path}: no face has both eye centres; cannot tell left from right")
  share = np.mean([f.points21[left, 0] < f.points21[right, 0] for f in both])
  if 0.2 < share < 0.8:
    raise DataError(f"{path}: 'LeftEyeCenter' is image-left in {share:.0%} of faces; the "
                    "left/right convention is ambiguous")
  return bool(share >= 0.8)


def read_aflw(sqlite_path: str, image_root: str | None = None, require_seven: bool = True,
              skip_bad_samples: bool = False) -> tuple[list[AFLWFace], bool, BadSamples]:
  """Faces of `aflw.sqlite` whose image exists under `image_root` (default: the `flickr`
  folder beside the database's folder, as AFLW ships). Returns (faces, left_is_image_left,
  bad samples). With `require_seven`, faces missing any of the 7 points are left out and
  listed in the bad samples (AFLW leaves invisible points unannotated)."""
  if not os.path.isfile(sqlite_path):
    raise DataError(f"{sqlite_path}: AFLW database does not exist")
  if image_root is None:
    image_root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(sqlite_path))),
                              "flickr")
  try:
    db = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    rows = db.execute(
        "SELECT Faces.face_id, FaceImages.filepath, FacePose.yaw, FacePose.pitch, FacePose.roll "
        "FROM Faces JOIN FaceImages ON Faces.file_id = FaceImages.file_id "
        "JOIN FacePose ON Faces.face_id = FacePose.face_id ORDER BY Faces.face_id").fetchall()
    coords = db.execute("SELECT face_id, feature_id, x, y FROM FeatureCoords").fetchall()
    db.close()
  except sqlite3.DatabaseError as e:
    raise DataError(f"{sqlite_path}: not a readable AFLW database ({e})") from e
  points = {}
  for face_id, feature_id, x, y in coords:
    if not 1 <= feature_id <= 21:
      raise DataError(f"{sqlite_path}: face {face_id} has feature_id {feature_id}, not 1..21")
    points.setdefault(face_id, np.full((21, 2), np.nan, np.float32))[feature_id - 1] = (x, y)
  bad = BadSamples()
  faces = []
  for face_id, filepath, yaw, pitch, roll in rows:
    try:
      image = os.path.join(image_root, filepath)
      if not os.path.isfile(image):
        raise DataError(f"{image}: image of AFLW face {face_id} does not exist")
      p = points.get(face_id, np.full((21, 2), np.nan, np.float32))
      faces.append(AFLWFace(image=image, points21=p, visible=~np.isnan(p[:, 0]),
                            yaw_deg=float(np.rad2deg(yaw)), pitch_deg=float(np.rad2deg(pitch)),
                            roll_deg=float(np.rad2deg(roll)), face_id=int(face_id)))
    except DataError as e:
      bad.handle(e, skip_bad_samples)
  if not faces:
    raise DataError(f"{sqlite_path}: no AFLW faces with existing images under {image_root}")
  convention = left_is_image_left(faces, sqlite_path)
  if require_seven:
    kept = []
    for face in faces:
      if np.isnan(face.seven_points(convention)).any():
        # Unannotated (invisible) points are part of AFLW, not damage: always left out, counted.
        bad.messages.append(f"{face.image}: AFLW face {face.face_id} lacks some of the 7 "
                            "landmarks")
      else:
        kept.append(face)
    faces = kept
  return faces, convention, bad
