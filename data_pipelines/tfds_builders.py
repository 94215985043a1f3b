"""TFDS builders (ArrayRecord, no TensorFlow at run time) over the readers of this package.

Build once from a manual download directory, then read with `tfds.data_source` into the same
Grain pipeline (`records_from_tfds`). Images are stored as their original encoded bytes; points
as float32 0-based pixels.

  builder = Faces300W(data_dir="/data/tfds", manual_dir="/data/300W")
  builder.download_and_prepare()
  source = tfds.data_source("faces300_w", data_dir="/data/tfds", split="train")

`tfds.features.Image` and `tfds.load` need TensorFlow; these builders use plain Tensor features
and are read with `tfds.data_source`, which does not.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.image_folders import FaceRecord, read_image_folder


def _face_features(num_points: int):
  return tfds.features.FeaturesDict({
      "image_bytes": tfds.features.Tensor(shape=(), dtype=np.object_),
      "image_name": tfds.features.Tensor(shape=(), dtype=np.object_),
      "landmarks": tfds.features.Tensor(shape=(num_points, 2), dtype=np.float32),
      "identity": tfds.features.Tensor(shape=(), dtype=np.object_),
  })


class Faces300W(tfds.core.GeneratorBasedBuilder):
  """300-W-style folders (LFPW, Helen, AFW, iBUG, ytf68): 68 points, identity when known.
  Splits come from `manifest.csv` when present, else everything is `train`."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Place the image folders (with .pts beside images) in manual_dir."

  def __init__(self, *, manual_dir: str | None = None, **kwargs):
    self._manual = manual_dir  # only needed to generate; reading needs just data_dir
    super().__init__(file_format="array_record", **kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=_face_features(68),
                                 description="300-W-style annotated face images")

  def _split_generators(self, dl_manager):
    del dl_manager
    if self._manual is None:
      raise ValueError("Faces300W(manual_dir=...) must name the image folder to build from")
    records, _ = read_image_folder(self._manual)
    splits = sorted({r.split or "train" for r in records})
    return {s: self._generate_examples([r for r in records if (r.split or "train") == s])
            for s in splits}

  def _generate_examples(self, records: list[FaceRecord]):
    for record in records:
      with open(record.image, "rb") as f:
        data = f.read()
      name = os.path.relpath(record.image, self._manual)
      yield name, {"image_bytes": data, "image_name": name, "landmarks": record.landmarks,
                   "identity": record.identity}


def records_from_tfds(source, cache_dir: str | None = None) -> list[FaceRecord]:
  """FaceRecords from a `tfds.data_source`, with images written back to files so the Grain
  pipeline decodes them like any folder (read-once cache; delete `cache_dir` to free it)."""
  cache_dir = cache_dir or tempfile.mkdtemp(prefix="rednet_tfds_")
  records = []
  for i in range(len(source)):
    example = source[i]
    name = example["image_name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    path = os.path.join(cache_dir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.isfile(path):
      with open(path, "wb") as f:
        f.write(example["image_bytes"])
    identity = example["identity"]
    identity = identity.decode() if isinstance(identity, bytes) else str(identity)
    records.append(FaceRecord(image=path, landmarks=np.asarray(example["landmarks"]),
                              identity=identity))
  return records
