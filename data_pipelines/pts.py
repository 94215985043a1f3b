"""iBUG `.pts` landmark files (300-W, 300-VW, the ytf68 layout).

On disk: `version: 1`, `n_points: N`, `{`, N lines `x y`, `}`, with 1-based pixel coordinates.
In memory: float32 (N, 2) arrays of 0-based (x, y), pixel centres at integers.
"""

from __future__ import annotations

import os

import numpy as np


class DataError(ValueError):
  """Bad input data; the message starts with the offending file."""


def read_pts(path: str, num_points: int | None = None) -> np.ndarray:
  """Reads an iBUG `.pts` file into 0-based (N, 2) float32; checks `n_points` and, if given,
  that it equals `num_points`."""
  try:
    with open(path, encoding="utf-8") as f:
      lines = [line.strip() for line in f if line.strip()]
  except OSError as e:
    raise DataError(f"{path}: cannot read landmark file ({e.strerror})") from e
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: not a text .pts file") from e
  header = {}
  body_start = None
  for i, line in enumerate(lines):
    if line == "{":
      body_start = i + 1
      break
    key, _, value = line.partition(":")
    header[key.strip()] = value.strip()
  if body_start is None or "n_points" not in header:
    raise DataError(f"{path}: not an iBUG .pts file (needs 'n_points:' and '{{')")
  try:
    declared = int(header["n_points"])
  except ValueError as e:
    raise DataError(f"{path}: n_points is {header['n_points']!r}, not an integer") from e
  try:
    end = lines.index("}", body_start)
  except ValueError as e:
    raise DataError(f"{path}: truncated, no closing '}}'") from e
  rows = lines[body_start:end]
  if len(rows) != declared:
    raise DataError(f"{path}: n_points says {declared} but {len(rows)} point lines follow")
  if num_points is not None and declared != num_points:
    raise DataError(f"{path}: has {declared} points, expected {num_points}")
  points = np.empty((declared, 2), np.float32)
  for i, row in enumerate(rows):
    fields = row.split()
    try:
      if len(fields) != 2:
        raise ValueError
      points[i] = float(fields[0]), float(fields[1])
    except ValueError as e:
      raise DataError(f"{path}: point line {i + 1} is {row!r}, not two numbers") from e
  if not np.all(np.isfinite(points)):
    raise DataError(f"{path}: contains non-finite coordinates")
  return points - 1.0


def write_pts(path: str, points: np.ndarray) -> None:
  """Writes 0-based (N, 2) points as a 1-based iBUG `.pts` file."""
  points = np.asarray(points, np.float64)
  if points.ndim != 2 or points.shape[1] != 2:
    raise ValueError(f"points must be (N, 2), got {points.shape}")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(f"version: 1\nn_points: {len(points)}\n{{\n")
    for x, y in points + 1.0:
      f.write(f"{x:.3f} {y:.3f}\n")
    f.write("}\n")
