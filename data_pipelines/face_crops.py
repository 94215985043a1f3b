"""Face crops and RED-Net's image augmentation as one similarity transform per sample.

Box rule (documented for predict.py and the papers' protocols alike): the face box is the
landmarks' bounding box, made square with side `box_scale` x its longer side, centred on the
box centre. The crop maps that square to `out_size` x `out_size` pixels. Augmentation (paper
section 5.1): scale 0.9-1.1, rotation +-15 deg, translation +-7 px at a 128 px crop (scaled with
the crop), horizontal flip with left/right landmark indices swapped. Image and landmarks go
through the same 2x3 matrix, so the points stay on the same facial features.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from data_pipelines.landmarks import flip_landmarks


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """Ranges of the random similarity transform (the defaults are the paper's) and appearance
  changes for in-the-wild faces (not in the paper: off by default)."""
  scale: tuple[float, float] = (0.9, 1.1)
  rotation_deg: float = 15.0
  rotation_step_deg: float = 0.0  # 0: any angle in +-rotation_deg; > 0: its multiples only
  translation_px_at_128: float = 7.0
  flip: bool = True
  colour: float = 0.0          # brightness, contrast and saturation each x U(1 - c, 1 + c)
  blur_prob: float = 0.0       # Gaussian blur, sigma U(0.3, 1.5) px at 128 px (scaled)
  occluder_prob: float = 0.0   # a rectangle of noise, 15-40 % of the crop side, anywhere


def face_box(landmarks: np.ndarray, box_scale: float) -> tuple[np.ndarray, float]:
  """(centre (2,), side) of the square face box around `landmarks` (see module docstring)."""
  low, high = landmarks.min(axis=0), landmarks.max(axis=0)
  side = float(np.max(high - low)) * box_scale
  if not side > 0:
    raise ValueError("degenerate landmarks: zero-size face box")
  return (low + high) / 2.0, side


def crop_matrix(centre: np.ndarray, side: float, out_size: int, scale: float = 1.0,
                rotation_deg: float = 0.0, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
  """2x3 matrix taking original-image pixels to crop pixels: the box centre lands on the crop
  centre (plus `shift`), the box side on `out_size` (times `scale`), rotated by
  `rotation_deg` (counter-clockwise on screen)."""
  zoom = out_size / side * scale
  angle = np.deg2rad(rotation_deg)
  # Image y points down, so a counter-clockwise turn on screen is a clockwise one in (x, y).
  rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
  linear = zoom * rotation
  out_centre = np.full(2, (out_size - 1) / 2.0) + np.asarray(shift)
  return np.concatenate([linear, (out_centre - linear @ centre)[:, None]], axis=1)


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
  return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def sample_augmentation(rng: np.random.Generator, augmentation: Augmentation, out_size: int
                        ) -> dict:
  t = augmentation.translation_px_at_128 * out_size / 128.0
  step = augmentation.rotation_step_deg
  if step > 0:   # e.g. DRR's {0, +-5, ..., +-30} deg
    count = int(augmentation.rotation_deg // step)
    rotation = step * rng.integers(-count, count + 1)
  else:
    rotation = rng.uniform(-augmentation.rotation_deg, augmentation.rotation_deg)
  return {"scale": rng.uniform(*augmentation.scale),
          "rotation_deg": float(rotation),
          "shift": tuple(rng.uniform(-t, t, size=2)),
          "flip": bool(augmentation.flip and rng.random() < 0.5)}


def augment_appearance(crop: np.ndarray, rng: np.random.Generator,
                       augmentation: Augmentation) -> np.ndarray:
  """The appearance part of `augmentation` on a uint8 (S, S, 3) RGB crop; landmarks are
  unchanged (an occluded landmark keeps its label: the model learns where it must be)."""
  out = crop.astype(np.float32)
  size = crop.shape[0]
  c = augmentation.colour
  if c > 0:
    grey = out @ np.float32([0.299, 0.587, 0.114])
    out = grey[..., None] + (out - grey[..., None]) * rng.uniform(1 - c, 1 + c)   # saturation
    out = (out - out.mean()) * rng.uniform(1 - c, 1 + c) + out.mean()            # contrast
    out = out * rng.uniform(1 - c, 1 + c)                                          # brightness
  if augmentation.blur_prob > 0 and rng.random() < augmentation.blur_prob:
    out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 1.5) * size / 128.0)
  if augmentation.occluder_prob > 0 and rng.random() < augmentation.occluder_prob:
    h, w = (rng.uniform(0.15, 0.4, size=2) * size).astype(int) + 1
    y, x = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
    out[y:y + h, x:x + w] = rng.uniform(0, 255, size=3) + rng.normal(0, 20, size=(h, w, 3))
  return np.clip(out, 0, 255).round().astype(np.uint8)


def crop_face(image: np.ndarray, landmarks: np.ndarray, out_size: int, box_scale: float = 1.3,
              scale: float = 1.0, rotation_deg: float = 0.0,
              shift: tuple[float, float] = (0.0, 0.0), flip: bool = False
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Crop (out_size, out_size, C) uint8, landmarks in crop pixels, and the 2x3 matrix used
  (before the flip). Pixels outside the image are black."""
  centre, side = face_box(landmarks, box_scale)
  matrix = crop_matrix(centre, side, out_size, scale, rotation_deg, shift)
  crop = cv2.warpAffine(image, matrix, (out_size, out_size), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  points = transform_points(matrix, landmarks)
  if flip:
    crop = np.ascontiguousarray(crop[:, ::-1])
    points = flip_landmarks(points, out_size)
  return crop, points, matrix


def mean_shape_in_crop(unit_mean_shape: np.ndarray, out_size: int, box_scale: float = 1.3
                       ) -> np.ndarray:
  """A box-normalised mean shape (`image_folders.mean_shape`) placed where the crop rule puts a
  face: centred, its longer side out_size / box_scale. This is z_0 for still images. Any
  (..., L, 2) array of box-normalised shapes is placed the same way."""
  return (np.asarray(unit_mean_shape) * (out_size / box_scale)
          + (out_size - 1) / 2.0).astype(np.float32)
