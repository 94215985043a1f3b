"""AFLW sqlite reader on a tiny database in the real schema."""

import os
import sqlite3

import cv2
import numpy as np
import pytest

from data_pipelines.aflw import AFLW_FEATURES, read_aflw, yaw_bin
from data_pipelines.pts import DataError


def face_points(rng):
  """21 AFLW points of a frontal face where 'Left*' features are on the image's left."""
  p = {name: None for name in AFLW_FEATURES}
  layout = {"LeftBrowLeftCorner": (20, 30), "LeftBrowCenter": (30, 27), "LeftBrowRightCorner": (40, 30),
            "RightBrowLeftCorner": (60, 30), "RightBrowCenter": (70, 27), "RightBrowRightCorner": (80, 30),
            "LeftEyeLeftCorner": (25, 40), "LeftEyeCenter": (32, 40), "LeftEyeRightCorner": (40, 40),
            "RightEyeLeftCorner": (60, 40), "RightEyeCenter": (68, 40), "RightEyeRightCorner": (75, 40),
            "LeftEar": (10, 50), "NoseLeft": (43, 60), "NoseCenter": (50, 62), "NoseRight": (57, 60),
            "RightEar": (90, 50), "MouthLeftCorner": (38, 75), "MouthCenter": (50, 76),
            "MouthRightCorner": (62, 75), "ChinCenter": (50, 92)}
  for name in AFLW_FEATURES:
    p[name] = np.array(layout[name], float) + rng.normal(scale=1.0, size=2)
  return p


def make_aflw(root, n_faces=4, drop=None, missing_image=None, mirrored=False):
  os.makedirs(os.path.join(root, "data"))
  db = sqlite3.connect(os.path.join(root, "data", "aflw.sqlite"))
  db.executescript("""
    CREATE TABLE FaceImages (image_id INTEGER, db_id TEXT, file_id TEXT, filepath TEXT,
                             bw INTEGER, width INTEGER, height INTEGER);
    CREATE TABLE Faces (face_id INTEGER, file_id TEXT, db_id TEXT);
    CREATE TABLE FacePose (face_id INTEGER, roll REAL, pitch REAL, yaw REAL, annot_type_id INTEGER);
    CREATE TABLE FeatureCoords (face_id INTEGER, feature_id INTEGER, x REAL, y REAL,
                                annot_type_id INTEGER);""")
  rng = np.random.default_rng(0)
  for face in range(1, n_faces + 1):
    rel = f"0/image{face:05d}.jpg"
    if face != missing_image:
      os.makedirs(os.path.join(root, "flickr", "0"), exist_ok=True)
      cv2.imwrite(os.path.join(root, "flickr", rel), np.zeros((100, 100, 3), np.uint8))
    db.execute("INSERT INTO FaceImages VALUES (?, 'flickr', ?, ?, 0, 100, 100)",
               (face, f"file{face}", rel))
    db.execute("INSERT INTO Faces VALUES (?, ?, 'flickr')", (face, f"file{face}"))
    db.execute("INSERT INTO FacePose VALUES (?, 0.1, -0.2, ?, 1)", (face, np.deg2rad(20 * face)))
    for k, (name, xy) in enumerate(face_points(rng).items(), start=1):
      if mirrored:  # "Left*" = the subject's left, on the image's right
        xy = (100 - xy[0], xy[1])
      if (face, name) != drop:
        db.execute("INSERT INTO FeatureCoords VALUES (?, ?, ?, ?, 1)", (face, k, *xy))
  db.commit()
  db.close()
  return os.path.join(root, "data", "aflw.sqlite")


def test_reads_faces_pose_and_seven_points_in_ibug_order(tmp_path):
  path = make_aflw(str(tmp_path), drop=(2, "NoseCenter"))
  faces, left_is_image_left, bad = read_aflw(path)
  assert left_is_image_left
  assert [f.face_id for f in faces] == [1, 3, 4] and bad.count == 1
  face = faces[0]
  assert face.yaw_deg == pytest.approx(20.0) and face.roll_deg == pytest.approx(np.rad2deg(0.1))
  seven = face.seven_points(left_is_image_left)
  # iBUG 7-point order: eye corners left to right, nose tip, mouth corners left to right.
  xs = seven[:, 0]
  assert xs[0] < xs[1] < xs[2] < xs[3] and xs[5] < xs[4] < xs[6]
  assert [yaw_bin(y) for y in (5, -20, 44.9, 80)] == ["0-15", "15-30", "30-45", "45-90"]
  faces_all, _, _ = read_aflw(path, require_seven=False)
  assert len(faces_all) == 4 and not faces_all[1].visible[AFLW_FEATURES.index("NoseCenter")]


def test_subject_left_convention_is_detected_and_gives_the_same_ibug_order(tmp_path):
  faces, left_is_image_left, _ = read_aflw(make_aflw(str(tmp_path), mirrored=True))
  assert not left_is_image_left
  xs = faces[0].seven_points(left_is_image_left)[:, 0]
  assert xs[0] < xs[1] < xs[2] < xs[3] and xs[5] < xs[4] < xs[6]


def test_missing_images_and_bad_databases_are_named(tmp_path):
  path = make_aflw(str(tmp_path / "a"), missing_image=3)
  with pytest.raises(DataError, match=r"image00003.jpg: image of AFLW face 3 does not exist"):
    read_aflw(path)
  faces, _, bad = read_aflw(path, skip_bad_samples=True)
  assert len(faces) == 3 and bad.count == 1
  not_db = tmp_path / "x.sqlite"
  not_db.write_text("hello")
  with pytest.raises(DataError, match="x.sqlite: not a readable AFLW database"):
    read_aflw(str(not_db))
  with pytest.raises(DataError, match="does not exist"):
    read_aflw(str(tmp_path / "none.sqlite"))
