"""TFDS ArrayRecord builder for 300-W-style folders, read back without TensorFlow."""

import os

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.image_folders import read_image_folder
from data_pipelines.tfds_builders import Faces300W, records_from_tfds

YTF68_MINI = os.path.join(os.path.dirname(__file__), "fixtures", "ytf68_mini")


def test_build_and_read_back_through_data_source(tmp_path):
  builder = Faces300W(data_dir=str(tmp_path / "tfds"), manual_dir=YTF68_MINI)
  builder.download_and_prepare()
  assert builder.name == "faces300_w"
  source = tfds.data_source(builder.name, data_dir=str(tmp_path / "tfds"), split="val")
  assert len(source) == 3
  records = records_from_tfds(source, str(tmp_path / "cache"))
  original, _ = read_image_folder(YTF68_MINI, split="val")
  by_name = {os.path.basename(r.image): r for r in original}
  for record in records:
    ref = by_name[os.path.basename(record.image)]
    np.testing.assert_array_equal(record.landmarks, ref.landmarks)
    assert record.identity == ref.identity == "Aishwarya_Rai"
    assert open(record.image, "rb").read() == open(ref.image, "rb").read()
