"""Grain pipeline for annotated still images (the image and identity stages).

Elements are {"image": uint8 (S, S, 3) RGB crop, "landmarks": float32 (L, 2) crop pixels,
"identity": int32 (-1 when unknown)}. The loader ships uint8 pixels and coordinates only;
normalisation, label maps and heatmaps are computed on the device (rendering them in the
loader starved the workers: docs/engineering_notes.md).
"""

from __future__ import annotations

import grain
import numpy as np

from data_pipelines import batching
from data_pipelines.batching import identity_disjoint_batches
from data_pipelines.face_crops import (Augmentation, augment_appearance, crop_face,
                                      sample_augmentation)
from data_pipelines.image_folders import FaceRecord, load_image_rgb


def identity_index(records: list[FaceRecord]) -> dict[str, int]:
  """Identity name -> class id for these records (see `batching.identity_index`)."""
  return batching.identity_index(r.identity for r in records)


class LoadAndCrop(grain.transforms.RandomMap):
  """Decode, crop around the landmarks' face box, and (when `augmentation` is set) apply the
  paper's random similarity + flip and the appearance changes it names. Picklable, so it
  runs in Grain worker processes."""

  def __init__(self, out_size: int, box_scale: float, augmentation: Augmentation | None,
               identities: dict[str, int]):
    self.out_size, self.box_scale = out_size, box_scale
    self.augmentation, self.identities = augmentation, identities

  def random_map(self, record: FaceRecord, rng: np.random.Generator) -> dict[str, np.ndarray]:
    image = load_image_rgb(record.image)
    params = (sample_augmentation(rng, self.augmentation, self.out_size)
              if self.augmentation is not None else {})
    crop, points, _ = crop_face(image, record.landmarks, self.out_size, self.box_scale, **params)
    if self.augmentation is not None:
      crop = augment_appearance(crop, rng, self.augmentation)
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


class LoadImageBatch(grain.transforms.RandomMap):
  """One batch of crops from record indices. A sample that fails to load raises, or with
  `skip_bad_samples` becomes a black crop with zero landmarks and `valid` False: batch shapes
  stay fixed for jit, the loss masks it, and the training loop counts `~valid` per epoch."""

  def __init__(self, records: list[FaceRecord], out_size: int, box_scale: float,
               augmentation: Augmentation | None, identities: dict[str, int],
               skip_bad_samples: bool):
    self.records = records
    self.crop = LoadAndCrop(out_size, box_scale, augmentation, identities)
    self.skip_bad_samples = skip_bad_samples

  def random_map(self, indices: list[int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    size = self.crop.out_size
    samples, valid = zip(*(batching.load_or_mask(
        lambda i=i: self.crop.random_map(self.records[i], rng),
        lambda i=i: {"image": np.zeros((size, size, 3), np.uint8),
                     "landmarks": np.zeros(self.records[i].landmarks.shape, np.float32),
                     "identity": np.int32(-1)},
        self.skip_bad_samples, "sample") for i in indices))
    batch = {k: np.stack([s[k] for s in samples]) for k in samples[0]}
    batch["valid"] = np.array(valid)
    return batch


def image_batch_dataset(records: list[FaceRecord], out_size: int, batch_size: int, *,
                        train: bool, seed: int = 0, samples_per_image: int = 10,
                        box_scale: float = 1.3, augmentation: Augmentation = Augmentation(),
                        identity_disjoint: bool = False, skip_bad_samples: bool = False,
                        identities: dict[str, int] | None = None,
                        host: tuple[int, int] = (0, 1),
                        samples_per_record: list[float] | None = None
                        ) -> tuple[grain.MapDataset, int]:
  """Batches of crops for one epoch (deterministic given `seed`; pass seed + epoch for the
  next). With `identity_disjoint`, no identity appears twice in a batch (the identity and video
  stages). `host` = (process index, process count): this process loads its part of every
  batch. `samples_per_record` (training) replaces `samples_per_image` with an expected count
  per record, fractions drawn per epoch (how sources are mixed with stated weights). Returns
  (dataset of batches with a `valid` mask, samples left over)."""
  if not records:
    raise ValueError("image_batch_dataset needs at least one record")
  identities = identity_index(records) if identities is None else identities
  if train and samples_per_record is not None:
    if len(samples_per_record) != len(records):
      raise ValueError(f"samples_per_record has {len(samples_per_record)} entries for "
                       f"{len(records)} records")
    expected = np.asarray(samples_per_record, np.float64)
    draws = np.random.default_rng([seed, 1]).random(len(records))
    counts = np.floor(expected).astype(int) + (draws < expected - np.floor(expected))
    items = [i for i, n in enumerate(counts) for _ in range(n)]
  else:
    repeats = samples_per_image if train else 1
    items = [i for i in range(len(records)) for _ in range(repeats)]
  if identity_disjoint:
    batches, left_over = identity_disjoint_batches([records[i].identity for i in items],
                                                   batch_size, seed)
    batches = [[items[j] for j in batch] for batch in batches]
  else:
    order = np.random.default_rng(seed).permutation(len(items)) if train else range(len(items))
    ordered = [items[j] for j in order]
    full = len(ordered) // batch_size * batch_size
    batches = [ordered[k:k + batch_size] for k in range(0, full, batch_size)]
    left_over = len(ordered) - full
  load = LoadImageBatch(records, out_size, box_scale, augmentation if train else None,
                        identities, skip_bad_samples)
  return (grain.MapDataset.source(batching.host_part(batches, *host)).random_map(load, seed=seed),
          left_over)
