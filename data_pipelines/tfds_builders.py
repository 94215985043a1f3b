"""TFDS builders (ArrayRecord, no TensorFlow at run time) for 300-W folders, AFLW and 300-VW.

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


class AFLW(tfds.core.GeneratorBasedBuilder):
  """AFLW faces (21 points, NaN where unannotated) with pose. Splits: `train` / `test` = 80 / 20
  % of faces by a fixed permutation of face ids (the paper's proportion; seed 0)."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = "manual_dir holds data/aflw.sqlite and flickr/ as AFLW ships."

  def __init__(self, *, manual_dir: str | None = None, **kwargs):
    self._manual = manual_dir
    super().__init__(file_format="array_record", **kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, description="AFLW faces with pose",
                                 features=tfds.features.FeaturesDict({
                                     "image_bytes": tfds.features.Tensor(shape=(), dtype=np.object_),
                                     "image_name": tfds.features.Tensor(shape=(), dtype=np.object_),
                                     "points21": tfds.features.Tensor(shape=(21, 2), dtype=np.float32),
                                     "yaw_pitch_roll_deg": tfds.features.Tensor(shape=(3,), dtype=np.float32),
                                     "face_id": tfds.features.Tensor(shape=(), dtype=np.int64),
                                 }))

  def _split_generators(self, dl_manager):
    del dl_manager
    if self._manual is None:
      raise ValueError("AFLW(manual_dir=...) must name the folder holding data/aflw.sqlite")
    from data_pipelines.aflw import read_aflw  # pylint: disable=g-import-not-at-top
    faces, _, _ = read_aflw(os.path.join(self._manual, "data", "aflw.sqlite"),
                            require_seven=False)
    order = np.random.default_rng(0).permutation(len(faces))
    cut = int(round(0.8 * len(faces)))
    return {"train": self._generate_examples([faces[i] for i in sorted(order[:cut])]),
            "test": self._generate_examples([faces[i] for i in sorted(order[cut:])])}

  def _generate_examples(self, faces):
    for face in faces:
      with open(face.image, "rb") as f:
        data = f.read()
      yield face.face_id, {
          "image_bytes": data, "image_name": os.path.relpath(face.image, self._manual),
          "points21": face.points21,
          "yaw_pitch_roll_deg": np.array([face.yaw_deg, face.pitch_deg, face.roll_deg],
                                         np.float32),
          "face_id": face.face_id}


class Video300VW(tfds.core.GeneratorBasedBuilder):
  """300-VW frames (JPEG-encoded, quality 95) with 68 points, one example per frame.
  Splits: `train` = the challenge's 50 training videos, `category1/2/3` = its test sets."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = "manual_dir holds the <id>/vid.avi + <id>/annot folders."

  def __init__(self, *, manual_dir: str | None = None, **kwargs):
    self._manual = manual_dir
    super().__init__(file_format="array_record", **kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, description="300-VW annotated video frames",
                                 features=tfds.features.FeaturesDict({
                                     "frame_jpeg": tfds.features.Tensor(shape=(), dtype=np.object_),
                                     "video_id": tfds.features.Tensor(shape=(), dtype=np.object_),
                                     "frame": tfds.features.Tensor(shape=(), dtype=np.int64),
                                     "landmarks": tfds.features.Tensor(shape=(68, 2), dtype=np.float32),
                                 }))

  def _split_generators(self, dl_manager):
    del dl_manager
    if self._manual is None:
      raise ValueError("Video300VW(manual_dir=...) must name the 300-VW folder")
    from data_pipelines import video_300vw  # pylint: disable=g-import-not-at-top
    videos, _ = video_300vw.read_300vw(self._manual)
    test_ids = {v for ids in video_300vw.TEST_CATEGORIES.values() for v in ids}
    splits = {"train": [v for v in videos if v.video_id not in test_ids]}
    for name, ids in video_300vw.TEST_CATEGORIES.items():
      splits[name] = [v for v in videos if v.video_id in set(ids)]
    return {name: self._generate_examples(vs) for name, vs in splits.items() if vs}

  def _generate_examples(self, videos):
    import cv2  # pylint: disable=g-import-not-at-top
    from data_pipelines.video_300vw import read_frames  # pylint: disable=g-import-not-at-top
    for video in videos:
      for start in range(0, video.num_frames, 64):
        count = min(64, video.num_frames - start)
        for i, frame in enumerate(read_frames(video.path, start, count)):
          ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                                  [cv2.IMWRITE_JPEG_QUALITY, 95])
          assert ok
          t = start + i
          yield f"{video.video_id}_{t:06d}", {
              "frame_jpeg": jpeg.tobytes(), "video_id": video.video_id, "frame": t,
              "landmarks": video.landmarks[t]}
