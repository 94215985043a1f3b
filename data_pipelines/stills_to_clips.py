"""T-frame clips made from one annotated still: a smooth random camera path (similarity plus a
mild perspective tilt), optionally a moving occluder and brightness drift, with the landmarks
moved by exactly the same homographies. Lets the video stage train on real faces when only
images exist (e.g. the ytf68 stills).
"""

from __future__ import annotations

import dataclasses

import cv2
import grain
import numpy as np

from data_pipelines.batching import (host_part, identity_disjoint_batches, identity_index,
                                     load_or_mask)
from data_pipelines.face_crops import crop_matrix, face_box
from data_pipelines.image_folders import FaceRecord, load_image_rgb
from data_pipelines.landmarks import flip_landmarks


@dataclasses.dataclass(frozen=True)
class StillClipConfig:
  clip_length: int = 10
  out_size: int = 128
  box_scale: float = 1.3
  max_rotation_deg: float = 15.0     # reached at the end of the path, smoothly
  max_scale_change: float = 0.1
  max_shift_px_at_128: float = 10.0
  max_perspective: float = 3e-4      # homography h20/h21 terms, per pixel of the crop
  occluder_prob: float = 0.5
  brightness_drift: float = 0.3      # +- multiplicative change over the clip
  flip: bool = False                 # mirror half the clips (landmarks' left/right swapped)


def _path(rng, length, amplitude):
  """Smooth 0 -> random end value (cosine ease), so consecutive frames move a little."""
  end = rng.uniform(-amplitude, amplitude)
  start = rng.uniform(-amplitude, amplitude) * 0.3
  f = (1 - np.cos(np.linspace(0, np.pi, length))) / 2
  return start + (end - start) * f


def clip_from_still(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
                    config: StillClipConfig = StillClipConfig()
                    ) -> tuple[np.ndarray, np.ndarray]:
  """(frames uint8 (T, S, S, 3), landmarks float32 (T, L, 2) in crop pixels)."""
  t, size = config.clip_length, config.out_size
  centre, side = face_box(landmarks, config.box_scale)
  rotation = _path(rng, t, config.max_rotation_deg)
  scale = 1.0 + _path(rng, t, config.max_scale_change)
  shift_amp = config.max_shift_px_at_128 * size / 128
  shifts = np.stack([_path(rng, t, shift_amp), _path(rng, t, shift_amp)], -1)
  tilt = np.stack([_path(rng, t, config.max_perspective),
                   _path(rng, t, config.max_perspective)], -1)
  gain = 1.0 + _path(rng, t, config.brightness_drift)
  occluder = None
  if rng.random() < config.occluder_prob:
    y = rng.uniform(0.3, 0.7) * size
    start, end = np.array([-0.2 * size, y]), np.array([1.2 * size, y + rng.uniform(-20, 20)])
    if rng.random() < 0.5:
      start, end = end, start
    occluder = (start, end, rng.uniform(0.12, 0.22) * size,
                tuple(int(c) for c in rng.integers(0, 256, 3)))
  frames = np.empty((t, size, size, 3), np.uint8)
  points = np.empty((t, *landmarks.shape), np.float32)
  c = (size - 1) / 2.0
  for i in range(t):
    similarity = np.vstack([crop_matrix(centre, side, size, scale[i], rotation[i], shifts[i]),
                            [0, 0, 1]])
    # Perspective about the crop centre: rows stay fixed at the centre, tilt grows outward.
    to_centre = np.array([[1, 0, -c], [0, 1, -c], [0, 0, 1]])
    tilt_h = np.array([[1, 0, 0], [0, 1, 0], [tilt[i, 0], tilt[i, 1], 1]])
    homography = np.linalg.inv(to_centre) @ tilt_h @ to_centre @ similarity
    frame = cv2.warpPerspective(image, homography, (size, size), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    moved = np.concatenate([landmarks, np.ones((len(landmarks), 1))], 1) @ homography.T
    points[i] = moved[:, :2] / moved[:, 2:]
    frame = frame.astype(np.float32) * gain[i]
    if occluder is not None:
      start, end, radius, colour = occluder
      at = start + (end - start) * i / max(t - 1, 1)
      cv2.circle(frame, (int(at[0]), int(at[1])), int(radius), colour, -1, cv2.LINE_AA)
    frames[i] = np.clip(frame, 0, 255).astype(np.uint8)
  if config.flip and rng.random() < 0.5:
    frames, points = np.ascontiguousarray(frames[:, :, ::-1]), flip_landmarks(points, size)
  return frames, points


class LoadStillClipBatch(grain.transforms.RandomMap):
  """Batch of clips made from still records: image uint8 (B, T, S, S, 3), landmarks float32
  (B, T, L, 2), identity int32, valid bool (False: unreadable image skipped, zeros instead)."""

  def __init__(self, records: list[FaceRecord], config: StillClipConfig,
               identities: dict[str, int], skip_bad_samples: bool):
    self.records, self.config = records, config
    self.identities, self.skip_bad_samples = identities, skip_bad_samples

  def random_map(self, indices: list[int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    t, s = self.config.clip_length, self.config.out_size

    def load(record):
      return clip_from_still(load_image_rgb(record.image), record.landmarks, rng, self.config)

    def zeros(record):
      return (np.zeros((t, s, s, 3), np.uint8),
              np.zeros((t, *record.landmarks.shape), np.float32))

    loaded, valid = zip(*(load_or_mask(lambda r=self.records[i]: load(r),
                                       lambda r=self.records[i]: zeros(r),
                                       self.skip_bad_samples, "sample") for i in indices))
    images, points = zip(*loaded)
    return {"image": np.stack(images), "landmarks": np.stack(points),
            "identity": np.array([self.identities.get(self.records[i].identity, -1)
                                  for i in indices], np.int32),
            "valid": np.array(valid)}


def still_clip_batch_dataset(records: list[FaceRecord], batch_size: int, *, seed: int = 0,
                             clips_per_image: int = 10,
                             config: StillClipConfig = StillClipConfig(),
                             skip_bad_samples: bool = False, host: tuple[int, int] = (0, 1)
                             ) -> tuple[grain.MapDataset, int]:
  """Identity-disjoint batches of clips made from stills, for one epoch (deterministic given
  `seed`). `host` = (process index, process count): this process loads its part of every
  batch. Returns (dataset, clips left over)."""
  identities = identity_index(r.identity for r in records)
  items = [i for i in range(len(records)) for _ in range(clips_per_image)]
  # A still without an identity label (300-W) is its own person for the no-repeat rule.
  batches, left_over = identity_disjoint_batches(
      [records[i].identity or f"#{i}" for i in items], batch_size, seed)
  load = LoadStillClipBatch(records, config, identities, skip_bad_samples)
  return (grain.MapDataset.source(host_part([[items[j] for j in b] for b in batches], *host))
          .random_map(load, seed=seed), left_over)
