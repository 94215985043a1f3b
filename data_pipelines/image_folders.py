"""300-W-style image folders: images with a `.pts` beside them, optionally a `manifest.csv`.

This is the layout of LFPW, Helen, AFW and iBUG as distributed, and of the ytf68 set:

  <root>/manifest.csv                      optional; columns: image (required, relative to
                                           root), identity, video, frame, split (optional)
  <root>/<any/sub/folders>/<name>.jpg      any image format OpenCV reads
  <root>/<any/sub/folders>/<name>.pts      iBUG points, 1-based

Without a manifest every image under root that has a `.pts` beside it is a sample (images
without one are not annotated and are ignored); identity is the name of the image's folder.
"""

from __future__ import annotations

import csv
import dataclasses
import os

import cv2
import numpy as np

from data_pipelines.pts import DataError, read_pts

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


@dataclasses.dataclass(frozen=True)
class FaceRecord:
  """One annotated image. `landmarks` are 0-based (x, y) pixels of the original image."""
  image: str
  landmarks: np.ndarray
  identity: str = ""
  video: str = ""
  frame: int = -1
  split: str = ""


@dataclasses.dataclass
class BadSamples:
  """Samples skipped under `skip_bad_samples`, with the reason for each."""
  messages: list[str] = dataclasses.field(default_factory=list)

  @property
  def count(self) -> int:
    return len(self.messages)

  def handle(self, error: DataError, skip: bool) -> None:
    if not skip:
      raise error
    self.messages.append(str(error))

  def summary(self) -> str:
    return f"{self.count} bad sample(s) skipped" + "".join(f"\n  {m}" for m in self.messages[:20])


def _pts_beside(image_path: str) -> str:
  return os.path.splitext(image_path)[0] + ".pts"


def read_image_folder(root: str, num_points: int = 68, split: str | None = None,
                      skip_bad_samples: bool = False) -> tuple[list[FaceRecord], BadSamples]:
  """Annotated images under `root` (see the module docstring), optionally one `split`.

  Bad input (a manifest row naming a missing file, a missing or malformed `.pts`, a wrong
  point count) raises `DataError` naming the file; with `skip_bad_samples` the sample is left
  out and reported in the returned `BadSamples`.
  """
  if not os.path.isdir(root):
    raise DataError(f"{root}: dataset directory does not exist")
  bad = BadSamples()
  manifest = os.path.join(root, "manifest.csv")
  if os.path.isfile(manifest):
    records = _records_from_manifest(root, manifest, num_points, split, skip_bad_samples, bad)
  else:
    records = _records_from_walk(root, num_points, skip_bad_samples, bad)
    if split is not None:
      raise DataError(f"{root}: split {split!r} requested but there is no manifest.csv to "
                      "define splits")
  if not records:
    where = f" in split {split!r}" if split is not None else ""
    raise DataError(f"{root}: no annotated images found{where} (expected images with a .pts "
                    "beside them" + (", or manifest.csv rows)" if split is None else ")"))
  return records, bad


def _records_from_manifest(root, manifest, num_points, split, skip, bad):
  records = []
  with open(manifest, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    if not reader.fieldnames or "image" not in reader.fieldnames:
      raise DataError(f"{manifest}: needs a header with an 'image' column, has "
                      f"{reader.fieldnames}")
    for line, row in enumerate(reader, start=2):
      if split is not None and row.get("split", "") != split:
        continue
      try:
        image = os.path.join(root, row["image"] or "")
        if not row["image"] or not os.path.isfile(image):
          raise DataError(f"{manifest} line {line}: image {row['image']!r} does not exist")
        pts = _pts_beside(image)
        if not os.path.isfile(pts):
          raise DataError(f"{pts}: missing annotation for {row['image']} "
                          f"(manifest line {line})")
        frame = row.get("frame") or "-1"
        if not frame.lstrip("-").isdigit():
          raise DataError(f"{manifest} line {line}: frame {frame!r} is not an integer")
        records.append(FaceRecord(image=image, landmarks=read_pts(pts, num_points),
                                  identity=row.get("identity", "") or "",
                                  video=row.get("video", "") or "", frame=int(frame),
                                  split=row.get("split", "") or ""))
      except DataError as e:
        bad.handle(e, skip)
  return records


def _records_from_walk(root, num_points, skip, bad):
  records = []
  for folder, dirs, files in os.walk(root):
    dirs.sort()
    for name in sorted(files):
      if not name.lower().endswith(IMAGE_EXTENSIONS):
        continue
      image = os.path.join(folder, name)
      pts = _pts_beside(image)
      if not os.path.isfile(pts):
        continue
      try:
        records.append(FaceRecord(image=image, landmarks=read_pts(pts, num_points),
                                  identity=os.path.basename(folder)))
      except DataError as e:
        bad.handle(e, skip)
  return records


def load_image_rgb(path: str) -> np.ndarray:
  """Decodes an image file to uint8 RGB (H, W, 3); corrupt or truncated files are errors."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise DataError(f"{path}: cannot read image ({e.strerror})") from e
  if data[:2] == b"\xff\xd8" and not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
    # OpenCV decodes a truncated JPEG with a grey bottom and only a warning on stderr.
    raise DataError(f"{path}: truncated JPEG (no end-of-image marker)")
  image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  if image is None:
    raise DataError(f"{path}: cannot decode image (corrupt or not an image)")
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def normalise_to_box(points: np.ndarray) -> np.ndarray:
  """Shape relative to its landmarks' bounding box: centre at 0, longer side of length 1."""
  points = np.asarray(points, np.float64)
  low, high = points.min(axis=-2, keepdims=True), points.max(axis=-2, keepdims=True)
  size = np.max(high - low, axis=-1, keepdims=True)
  if np.any(size <= 0):
    raise ValueError("degenerate shape: all landmarks at one point")
  return (points - (low + high) / 2) / size


def mean_shape(shapes) -> np.ndarray:
  """Mean of box-normalised training shapes (see `normalise_to_box`), float32 (L, 2)."""
  shapes = [np.asarray(s) for s in shapes]
  if not shapes:
    raise ValueError("mean_shape needs at least one shape")
  return normalise_to_box(np.stack(shapes)).mean(axis=0).astype(np.float32)
