"""iBUG .pts and 300-W-style image folders (with and without manifest), bad input, mean shape."""

import os

import cv2
import numpy as np
import pytest

from data_pipelines.image_folders import (load_image_rgb, mean_shape, normalise_to_box,
                                          read_image_folder)
from data_pipelines.pts import DataError, read_pts, write_pts

YTF68_MINI = os.path.join(os.path.dirname(__file__), "fixtures", "ytf68_mini")


def test_pts_round_trip_is_one_based_on_disk(tmp_path):
  points = np.array([[0.0, 0.0], [10.5, 20.25], [127.0, 3.0]], np.float32)
  path = str(tmp_path / "a.pts")
  write_pts(path, points)
  text = open(path).read().split("\n")
  assert text[:3] == ["version: 1", "n_points: 3", "{"] and text[3] == "1.000 1.000"
  np.testing.assert_allclose(read_pts(path, 3), points)


@pytest.mark.parametrize("content, message", [
    ("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n", "n_points says 3 but 2 point lines"),
    ("version: 1\nn_points: 2\n{\n1 2\n3 four\n}\n", "point line 2 is '3 four'"),
    ("version: 1\nn_points: 2\n{\n1 2\n3 4\n", "truncated"),
    ("version: 1\n1 2\n", "not an iBUG .pts file"),
    ("version: 1\nn_points: two\n{\n}\n", "n_points is 'two'"),
    ("version: 1\nn_points: 1\n{\n1 nan\n}\n", "non-finite"),
])
def test_malformed_pts_names_the_file_and_problem(tmp_path, content, message):
  path = tmp_path / "bad.pts"
  path.write_text(content)
  with pytest.raises(DataError) as info:
    read_pts(str(path))
  assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_wrong_point_count_and_missing_file(tmp_path):
  path = str(tmp_path / "five.pts")
  write_pts(path, np.zeros((5, 2)))
  with pytest.raises(DataError, match="five.pts: has 5 points, expected 68"):
    read_pts(path, 68)
  with pytest.raises(DataError, match="nope.pts: cannot read"):
    read_pts(str(tmp_path / "nope.pts"))


def test_real_ytf68_layout_with_manifest_and_splits():
  records, bad = read_image_folder(YTF68_MINI)
  assert len(records) == 6 and bad.count == 0
  train, _ = read_image_folder(YTF68_MINI, split="train")
  val, _ = read_image_folder(YTF68_MINI, split="val")
  assert {r.identity for r in train} == {"Adam_Sandler"}
  assert {r.identity for r in val} == {"Aishwarya_Rai"}
  assert [r.frame for r in val] == [0, 1, 2] and {r.video for r in val} == {"0"}
  for r in records:
    image = load_image_rgb(r.image)
    h, w = image.shape[:2]
    assert r.landmarks.shape == (68, 2)
    assert np.all(r.landmarks >= 0) and np.all(r.landmarks[:, 0] < w)
    assert np.all(r.landmarks[:, 1] < h)
  # 0-based in memory: the file's first x minus one.
  first = open(records[0].image[:-4] + ".pts").read().split("{")[1].split()[0]
  assert records[0].landmarks[0, 0] == pytest.approx(float(first) - 1)


def make_folder(root, names, n_points=68, size=(40, 32)):
  rng = np.random.default_rng(0)
  for name in names:
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, rng.integers(0, 255, size=(*size, 3), dtype=np.uint8))
    write_pts(os.path.splitext(path)[0] + ".pts", rng.uniform(0, 30, size=(n_points, 2)))


def test_folder_without_manifest_uses_images_with_pts_beside_them(tmp_path):
  make_folder(str(tmp_path), ["lfpw/a.png", "helen/b/c.jpg"])
  cv2.imwrite(str(tmp_path / "helen" / "unannotated.jpg"), np.zeros((8, 8, 3), np.uint8))
  records, _ = read_image_folder(str(tmp_path))
  assert sorted(os.path.relpath(r.image, tmp_path) for r in records) == ["helen/b/c.jpg",
                                                                         "lfpw/a.png"]
  assert {r.identity for r in records} == {"lfpw", "b"}
  with pytest.raises(DataError, match="no manifest.csv"):
    read_image_folder(str(tmp_path), split="train")


def test_bad_folders_fail_clearly_or_are_skipped_and_counted(tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    read_image_folder(str(tmp_path / "missing"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match="empty: no annotated images found"):
    read_image_folder(str(tmp_path / "empty"))

  root = tmp_path / "set"
  make_folder(str(root), ["p/1.jpg", "p/2.jpg"])
  make_folder(str(root), ["q/3.jpg"], n_points=5)                        # wrong point count
  (root / "manifest.csv").write_text("image,identity,split\np/1.jpg,p,train\n"
                                     "p/2.jpg,p,train\nq/3.jpg,q,train\ngone.jpg,z,train\n")
  with pytest.raises(DataError, match="3.pts: has 5 points, expected 68"):
    read_image_folder(str(root))
  records, bad = read_image_folder(str(root), skip_bad_samples=True)
  assert len(records) == 2 and bad.count == 2
  assert "manifest.csv line 5: image 'gone.jpg' does not exist" in bad.summary()
  os.remove(root / "p" / "2.pts")
  records, bad = read_image_folder(str(root), skip_bad_samples=True)
  assert len(records) == 1 and any("2.pts: missing annotation" in m for m in bad.messages)


def test_corrupt_and_truncated_images_are_errors(tmp_path):
  good = str(tmp_path / "good.jpg")
  cv2.imwrite(good, np.full((16, 16, 3), 200, np.uint8))
  assert load_image_rgb(good).shape == (16, 16, 3)
  truncated = tmp_path / "truncated.jpg"
  truncated.write_bytes(open(good, "rb").read()[:-40])
  with pytest.raises(DataError, match="truncated.jpg: truncated JPEG"):
    load_image_rgb(str(truncated))
  garbage = tmp_path / "garbage.png"
  garbage.write_bytes(b"not an image at all")
  with pytest.raises(DataError, match="garbage.png: cannot decode"):
    load_image_rgb(str(garbage))


def test_mean_shape_is_box_normalised_and_keeps_facial_layout():
  records, _ = read_image_folder(YTF68_MINI)
  mean = mean_shape(r.landmarks for r in records)
  assert mean.shape == (68, 2)
  extent = mean.max(0) - mean.min(0)
  assert max(extent) == pytest.approx(1.0, abs=0.05)                    # unit box on average
  assert mean[36, 0] < mean[45, 0] and mean[30, 1] < mean[57, 1]       # eyes L-R, nose above chin
  shifted = normalise_to_box(records[0].landmarks * 2 + 7)
  np.testing.assert_allclose(shifted, normalise_to_box(records[0].landmarks), atol=1e-6)
