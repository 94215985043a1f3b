"""Landmark schemes: iBUG 68-point indices, the 7-point subset of RED-Net, mirror permutations.

Coordinates are (x, y), 0-based pixels with pixel centres at integers (see rednet_jax.models.targets).
"""

from __future__ import annotations

import numpy as np

# RED-Net's 7 landmarks: outer/inner corners of both eyes, nose tip, mouth corners (iBUG 0-based).
IBUG68_TO_7: tuple[int, ...] = (36, 39, 42, 45, 30, 48, 54)


def _mirror_pairs_68() -> np.ndarray:
  perm = np.arange(68)
  pairs = [(i, 16 - i) for i in range(8)]                        # jaw
  pairs += [(17 + i, 26 - i) for i in range(5)]                  # eyebrows
  pairs += [(31, 35), (32, 34)]                                  # nostrils
  pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
  pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]    # outer lips
  pairs += [(60, 64), (61, 63), (65, 67)]                        # inner lips
  for a, b in pairs:
    perm[a], perm[b] = b, a
  return perm


# FLIP_68[i] = index of the landmark that point i becomes after a horizontal flip.
FLIP_68: np.ndarray = _mirror_pairs_68()
FLIP_7: np.ndarray = np.array([IBUG68_TO_7.index(int(FLIP_68[i])) for i in IBUG68_TO_7])


def flip_permutation(num_points: int) -> np.ndarray:
  if num_points == 68:
    return FLIP_68
  if num_points == 7:
    return FLIP_7
  raise ValueError(f"no mirror permutation for {num_points} landmarks (known: 68, 7)")


def flip_landmarks(points: np.ndarray, width: int) -> np.ndarray:
  """Landmarks of the horizontally mirrored image: x -> width - 1 - x, left/right swapped."""
  points = np.asarray(points)
  mirrored = points.copy()
  mirrored[..., 0] = width - 1 - points[..., 0]
  return mirrored[..., flip_permutation(points.shape[-2]), :]


def to_7_points(points: np.ndarray) -> np.ndarray:
  """The 7-point subset of 68-point iBUG landmarks (..., 68, 2) -> (..., 7, 2)."""
  if points.shape[-2] != 68:
    raise ValueError(f"expected 68 landmarks, got {points.shape[-2]}")
  return np.asarray(points)[..., IBUG68_TO_7, :]
