"""Grain pipeline for annotated still images (the image and identity stages).

Elements are {"image": uint8 (S, S, 3) RGB crop, "landmarks": float32 (L, 2) crop pixels,
"identity": int32 (-1 when unknown)}. The loader ships uint8 pixels and coordinates only;
normalisation, label maps and heatmaps are computed on the device (NOTES.md: rendering them
in the loader starved the workers).
"""

from __future__ import annotations

import grain
import numpy as np

from data_pipelines.face_crops import Augmentation, crop_face, sample_augmentation
from data_pipelines.image_folders import FaceRecord, load_image_rgb


def identity_index(records: list[FaceRecord]) -> dict[str, int]:
  """Identity name -> class id, sorted by name so the mapping does not depend on file order."""
  return {name: i for i, name in enumerate(sorted({r.identity for r in records if r.identity}))}


class LoadAndCrop(grain.transforms.RandomMap):
  """Decode, crop around the landmarks' face box, and (when `augmentation` is set) apply the
  paper's random similarity + flip. Picklable, so it runs in Grain worker processes."""

  def __init__(self, out_size: int, box_scale: float, augmentation: Augmentation | None,
               identities: dict[str, int]):
    self.out_size, self.box_scale = out_size, box_scale
    self.augmentation, self.identities = augmentation, identities

  def random_map(self, record: FaceRecord, rng: np.random.Generator) -> dict[str, np.ndarray]:
    image = load_image_rgb(record.image)
    params = (sample_augmentation(rng, self.augmentation, self.out_size)
              if self.augmentation is not None else {})
    crop, points, _ = crop_face(image, record.landmarks, self.out_size, self.box_scale, **params)
    return {"image": crop, "landmarks": points,
            "identity": np.int32(self.identities.get(record.identity, -1))}


def image_dataset(records: list[FaceRecord], out_size: int, *, train: bool, seed: int = 0,
                  box_scale: float = 1.3, augmentation: Augmentation = Augmentation(),
                  samples_per_image: int = 10,
                  identities: dict[str, int] | None = None) -> grain.MapDataset:
  """A random-access dataset of crops. Training: each image appears `samples_per_image` times
  per epoch (the paper's 10 augmented samples per image), shuffled, each with its own random
  transform; deterministic given `seed`. Evaluation: each image once, centred, no augmentation.
  """
  if not records:
    raise ValueError("image_dataset needs at least one record")
  identities = identity_index(records) if identities is None else identities
  dataset = grain.MapDataset.source(records)
  if train:
    dataset = dataset.repeat(samples_per_image).shuffle(seed=seed)
  transform = LoadAndCrop(out_size, box_scale, augmentation if train else None, identities)
  return dataset.random_map(transform, seed=seed)
