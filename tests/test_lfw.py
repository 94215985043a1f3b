"""LFW-style folders (identity = folder) with the documented landmark CSV."""

import os

import cv2
import numpy as np
import pytest

from data_pipelines.lfw import read_lfw
from data_pipelines.pts import DataError


def make_lfw(root, people=("Aaron_Eckhart", "Zico"), per_person=2):
  rows = ["image," + ",".join(f"{a}{i}" for i in range(7) for a in "xy")]
  for person in people:
    os.makedirs(os.path.join(root, person))
    for k in range(1, per_person + 1):
      rel = f"{person}/{person}_{k:04d}.jpg"
      cv2.imwrite(os.path.join(root, rel), np.zeros((250, 250, 3), np.uint8))
      rows.append(rel + "," + ",".join(str(100.0 + i + k) for i in range(14)))
  path = os.path.join(root, "landmarks.csv")
  with open(path, "w") as f:
    f.write("\n".join(rows) + "\n")
  return path


def test_identity_from_folder_and_points_from_csv(tmp_path):
  csv_path = make_lfw(str(tmp_path))
  records, bad = read_lfw(str(tmp_path), csv_path)
  assert len(records) == 4 and bad.count == 0
  assert [r.identity for r in records] == ["Aaron_Eckhart"] * 2 + ["Zico"] * 2
  np.testing.assert_allclose(records[0].landmarks[0], [101.0, 102.0])
  assert records[0].landmarks.shape == (7, 2)


def test_bad_rows_are_named_or_skipped(tmp_path):
  csv_path = make_lfw(str(tmp_path))
  with open(csv_path, "a") as f:
    f.write("Nobody/Nobody_0001.jpg," + ",".join(["1"] * 14) + "\n")
    f.write("Zico/Zico_0001.jpg," + ",".join(["x"] * 14) + "\n")
  with pytest.raises(DataError, match="landmarks.csv line 6: image 'Nobody/Nobody_0001.jpg'"):
    read_lfw(str(tmp_path), csv_path)
  records, bad = read_lfw(str(tmp_path), csv_path, skip_bad_samples=True)
  assert len(records) == 4 and bad.count == 2
  assert "line 7: coordinates are not numbers" in bad.summary()
  wrong = tmp_path / "wrong.csv"
  wrong.write_text("file,a,b\n")
  with pytest.raises(DataError, match="wrong.csv: header must be image,x0,y0"):
    read_lfw(str(tmp_path), str(wrong))
