"""TFDS ArrayRecord builder for 300-W-style folders, read back without TensorFlow."""

import os

import numpy as np
import pytest
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


def test_aflw_and_300vw_builders(tmp_path):
  from data_pipelines.tfds_builders import AFLW, Video300VW
  from test_aflw import make_aflw
  from test_video_300vw import write_video
  make_aflw(str(tmp_path / "aflw"), n_faces=5)
  aflw = AFLW(data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "aflw"))
  aflw.download_and_prepare()
  train = tfds.data_source(aflw.name, data_dir=str(tmp_path / "tfds"), split="train")
  test = tfds.data_source(aflw.name, data_dir=str(tmp_path / "tfds"), split="test")
  assert (len(train), len(test)) == (4, 1)
  ids = sorted(int(train[i]["face_id"]) for i in range(4)) + [int(test[0]["face_id"])]
  assert sorted(ids) == [1, 2, 3, 4, 5]

  for video_id in ("001", "114"):                              # 114 is a category-1 video
    write_video(str(tmp_path / "300vw" / video_id), n_frames=3, size=(32, 32))
  vw = Video300VW(data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "300vw"))
  vw.download_and_prepare()
  frames = tfds.data_source(vw.name, data_dir=str(tmp_path / "tfds"), split="category1")
  assert len(frames) == 3
  example = frames[0]
  video_id = example["video_id"]
  assert (video_id.decode() if isinstance(video_id, bytes) else video_id) == "114"
  assert example["landmarks"].shape == (68, 2)
  assert len(tfds.data_source(vw.name, data_dir=str(tmp_path / "tfds"), split="train")) == 3


def test_a_config_trains_from_a_prepared_tfds_dataset(tmp_path):
  """data.kind='tfds_faces': the stage's data come from the ArrayRecord dataset, the same faces
  as the folder it was prepared from, batched by the usual pipeline."""
  from data_pipelines.pts import DataError  # pylint: disable=g-import-not-at-top
  from rednet_jax.training.configs import load_config  # pylint: disable=g-import-not-at-top
  from rednet_jax.training.input_pipeline import build_stage_data  # pylint: disable=g-import-not-at-top
  Faces300W(data_dir=str(tmp_path / "tfds"), manual_dir=YTF68_MINI).download_and_prepare()
  config = load_config("quickstart:tiny").image
  config.data.update(kind="tfds_faces", root=str(tmp_path / "tfds"), train_split="train",
                     eval_split="val", batch_size=3, samples_per_image=1, augment=False)
  config.eval.data.kind = ""
  data = build_stage_data(config, str(tmp_path / "work"))
  assert data.steps_per_epoch == 1 and "3 training images of 1 identities, 3 held out" in \
      data.description
  batch = data.train[0]
  assert batch["image"].shape == (3, 1, 32, 32, 3) and batch["valid"].all()
  folder = load_config("quickstart:tiny").image
  folder.data.update(kind="image_folder", root=YTF68_MINI, batch_size=3, samples_per_image=1,
                     augment=False)
  folder.eval.data.kind = ""
  np.testing.assert_allclose(data.mean_shape, build_stage_data(folder, str(tmp_path)).mean_shape,
                             atol=1e-5)
  config.data.tfds_name = "not_prepared"
  with pytest.raises(DataError, match=r"no TFDS dataset 'not_prepared'.*Faces300W"):
    build_stage_data(config, str(tmp_path / "work"))
