"""The `300w` layout (LFPW + Helen with train/test manifest splits) through the image-folder
reader and the evaluation protocol: per-subset rows (lfpw, helen, common), bad samples skipped
and counted instead of aborting the evaluation."""

import csv
import os
import shutil

import numpy as np
import pytest

from data_pipelines.pts import DataError
from rednet_jax.evaluation import protocols
from rednet_jax.inference.landmark_model import load_model
from test_inference import VAL_FACES, tiny_model_dir  # noqa: F401


def make_300w(root, missing_row=False, truncated=None):
  """lfpw/{trainset,testset} and helen/{trainset,testset} from the fixture faces, with the
  release's manifest columns."""
  rows = []
  layout = [("lfpw", "train"), ("lfpw", "test"), ("helen", "test"), ("helen", "train"),
            ("lfpw", "test"), ("helen", "test")]
  for i, (subset, split) in enumerate(layout):
    source = VAL_FACES[i % len(VAL_FACES)]
    name = f"{subset}/{split}set/face_{i}.jpg"
    os.makedirs(os.path.join(root, subset, f"{split}set"), exist_ok=True)
    shutil.copy(source, os.path.join(root, name))
    shutil.copy(os.path.splitext(source)[0] + ".pts", os.path.join(root, name[:-4] + ".pts"))
    rows.append({"image": name, "subset": subset, "split": split, "width": 0, "height": 0,
                 "source": name, "crop_x0": 0, "crop_y0": 0, "crop_scale": 1})
  if missing_row:
    rows.append({**rows[1], "image": "lfpw/testset/gone.jpg"})
  if truncated is not None:
    path = os.path.join(root, rows[truncated]["image"])
    with open(path, "rb") as f:
      data = f.read()
    with open(path, "wb") as f:
      f.write(data[:len(data) // 2])
  with open(os.path.join(root, "manifest.csv"), "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return root


def test_test_split_is_common_with_lfpw_and_helen_rows(tiny_model_dir, tmp_path):
  root = make_300w(str(tmp_path / "300w"))
  faces = list(protocols.image_folder_faces(root, "test"))
  assert [f[2] for f in faces] == [["lfpw", "common", "test"], ["helen", "common", "test"],
                                   ["lfpw", "common", "test"], ["helen", "common", "test"]]
  assert len(list(protocols.image_folder_faces(root, "train"))) == 2
  result = protocols.evaluate_images(load_model(tiny_model_dir), faces)
  rows = protocols.tables(result, protocols.SUBSET_ORDER)
  assert list(rows) == ["lfpw", "helen", "common", "test", "all"]
  assert rows["lfpw"]["frames"] == rows["helen"]["frames"] == 2 and rows["common"]["frames"] == 4
  assert rows["common"]["nme_io"] == pytest.approx(
      np.mean([rows["lfpw"]["nme_io"], rows["helen"]["nme_io"]]), rel=1e-5)


def test_bad_samples_are_skipped_and_counted_or_are_errors(tiny_model_dir, tmp_path):
  root = make_300w(str(tmp_path / "300w"), missing_row=True, truncated=4)
  with pytest.raises(DataError, match="gone.jpg"):
    list(protocols.image_folder_faces(root, "test"))
  bad = []
  faces = list(protocols.image_folder_faces(root, "test", bad_samples=bad))
  assert len(faces) == 4 and len(bad) == 1 and "gone.jpg" in bad[0]
  model = load_model(tiny_model_dir)
  with pytest.raises(DataError, match="truncated JPEG"):
    protocols.evaluate_images(model, faces)
  result = protocols.evaluate_images(model, faces, skip_bad_samples=True)
  assert len(result.points) == 3 and "face_4.jpg" in result.bad_samples[0]
  assert protocols.tables(result)["all"]["bad_samples"] == 1
  assert "bad_samples" in protocols.markdown_table(protocols.tables(result))
