"""Landmark error metrics with the normaliser in every name.

Normalisers (`kind`), for 68 iBUG points and the 7-point subset (iBUG 36, 39, 42, 45, 30, 48, 54):
  io   inter-ocular: outer eye corners (68: 36 and 45; 7: 0 and 3) -- RED-Net's NME
  ip   inter-pupil: eye centres (68: means of 36-41 and 42-47; 7: means of corners 0,1 and 2,3)
  box  diagonal of the ground truth's bounding box
Errors are per shape: mean point-to-point distance / normaliser, as fractions; summaries report
NME, failure rates and CED areas in % / [0, 1] with names like `nme_io`, `fr10_io`, `auc08_box`.
Functions take NumPy or JAX arrays (jnp operations), shapes (..., L, 2).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

NORMALISERS = ("io", "ip", "box")
# iBUG 68-point groups, for per-group errors.
GROUPS_68 = {"jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36),
             "eyes": range(36, 48), "mouth": range(48, 68)}


# Landmark counts whose eyes are known: the io and ip normalisers are defined for these.
EYE_BASED_COUNTS = (68, 7)


def _eye_points(num_points: int):
  if num_points == 68:
    return (36,), (45,), list(range(36, 42)), list(range(42, 48))
  if num_points == 7:
    return (0,), (3,), [0, 1], [2, 3]
  raise ValueError(f"eye-based normalisers need 68 or 7 landmarks, got {num_points}")


def normaliser(landmarks, kind: str):
  """The normalising distance of each ground-truth shape (..., L, 2) -> (...)."""
  if kind == "box":
    extent = landmarks.max(axis=-2) - landmarks.min(axis=-2)
    return jnp.linalg.norm(extent, axis=-1)
  left_corner, right_corner, left_eye, right_eye = _eye_points(landmarks.shape[-2])
  if kind == "io":
    left, right = landmarks[..., left_corner[0], :], landmarks[..., right_corner[0], :]
  elif kind == "ip":
    left = landmarks[..., left_eye, :].mean(axis=-2)
    right = landmarks[..., right_eye, :].mean(axis=-2)
  else:
    raise ValueError(f"normaliser must be one of {NORMALISERS}, got {kind!r}")
  return jnp.linalg.norm(left - right, axis=-1)


def normalised_errors(points, landmarks, kind: str = "io"):
  """Per-shape mean point-to-point error divided by `normaliser(landmarks, kind)`; (...)."""
  distance = jnp.linalg.norm(points - landmarks, axis=-1).mean(-1)
  return distance / jnp.maximum(normaliser(landmarks, kind), 1e-6)


def ced_auc(errors: np.ndarray, max_error: float) -> float:
  """Area under the cumulative error distribution from 0 to `max_error`, divided by
  `max_error` (1 = every error is 0)."""
  errors = np.sort(np.asarray(errors, np.float64).reshape(-1))
  thresholds = np.linspace(0.0, max_error, 1001)
  ced = np.searchsorted(errors, thresholds, side="right") / errors.size
  return float(np.trapezoid(ced, thresholds) / max_error)


def summarise(errors: np.ndarray, kind: str = "io") -> dict[str, float]:
  """NME (%), failure rates above 8 % and 10 % (%), CED areas to 8 % and 10 %, frame count."""
  errors = np.asarray(errors, np.float64).reshape(-1)
  if errors.size == 0:
    raise ValueError("no errors to summarise")
  return {f"nme_{kind}": 100 * float(errors.mean()),
          f"fr08_{kind}": 100 * float((errors > 0.08).mean()),
          f"fr10_{kind}": 100 * float((errors > 0.10).mean()),
          f"auc08_{kind}": ced_auc(errors, 0.08),
          f"auc10_{kind}": ced_auc(errors, 0.10),
          "frames": int(errors.size)}


def group_errors(points: np.ndarray, landmarks: np.ndarray, kind: str = "io"
                 ) -> dict[str, float]:
  """Mean normalised error (%) of each 68-point landmark group (`GROUPS_68`)."""
  points, landmarks = np.asarray(points), np.asarray(landmarks)
  if landmarks.shape[-2] != 68:
    raise ValueError(f"landmark groups are defined for 68 points, got {landmarks.shape[-2]}")
  norm = np.maximum(np.asarray(normaliser(landmarks, kind)), 1e-6)
  distance = np.linalg.norm(points - landmarks, axis=-1)                  # (..., 68)
  return {f"nme_{kind}_{name}": 100 * float((distance[..., list(idx)].mean(-1) / norm).mean())
          for name, idx in GROUPS_68.items()}


def jitter_per_frame(points: np.ndarray) -> np.ndarray:
  """Frame-to-frame landmark acceleration of a tracked sequence (T, L, 2), for video without
  labels: |p[t+1] - 2 p[t] + p[t-1]| averaged over landmarks, divided by the inter-ocular
  distance of the shape at t, in %; (T-2,) values for frames 1..T-2."""
  points = np.asarray(points, np.float64)
  if points.ndim != 3 or len(points) < 3:
    raise ValueError(f"jitter needs (T >= 3, L, 2) points, got {points.shape}")
  acceleration = np.linalg.norm(points[2:] - 2 * points[1:-1] + points[:-2], axis=-1).mean(-1)
  scale = np.maximum(np.asarray(normaliser(points[1:-1], "io")), 1e-6)
  return 100 * acceleration / scale


def jitter(points) -> dict[str, float]:
  """Mean and 95th percentile of `jitter_per_frame` over a sequence (T, L, 2), or over several
  (a list of sequences: runs of consecutive tracked frames, each of 3 frames or more)."""
  sequences = [points] if isinstance(points, np.ndarray) else list(points)
  values = np.concatenate([jitter_per_frame(s) for s in sequences])
  return {"jitter_io_mean": float(values.mean()),
          "jitter_io_p95": float(np.percentile(values, 95))}
