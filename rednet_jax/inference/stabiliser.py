"""A speed-adaptive low-pass filter for tracked landmarks (the One-Euro filter of Casiez,
Roussel and Vogel, CHI 2012; MediaPipe smooths its face landmarks the same way).

Each landmark is low-passed with a cut-off that rises with its speed: a still face gets a low
cut-off (the frame-to-frame flicker of the read-out is removed), a moving one a high cut-off
(little lag). Speeds are measured in face sizes per second (the inter-ocular distance of the
current shape), so one setting serves small and large faces alike.

The filter only changes what is reported: the tracker keeps cropping around its raw
prediction, so filtering never feeds back into the model.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

_OUTER_EYE_CORNERS = {68: (36, 45), 7: (0, 3)}


@dataclasses.dataclass(frozen=True)
class OneEuroSettings:
  # Defaults chosen on real face videos by `benchmarks/stabiliser_sweep.py --kind=videos`
  # (lowest jitter within +0.1 estimated NME; docs/protocols.md).
  min_cutoff_hz: float = 0.3     # cut-off of a still landmark
  beta: float = 5.0              # cut-off increase per (face size / s) of speed
  speed_cutoff_hz: float = 1.0   # low-pass on the speed estimate itself

  def __post_init__(self):
    if self.min_cutoff_hz <= 0 or self.speed_cutoff_hz <= 0 or self.beta < 0:
      raise ValueError(f"One-Euro settings need positive cut-offs and beta >= 0, got {self}")


def _alpha(cutoff_hz, fps: float):
  tau = 1.0 / (2 * math.pi * cutoff_hz)
  return 1.0 / (1.0 + tau * fps)


def _face_size(points: np.ndarray) -> float:
  """Outer-eye-corner distance (68 or 7 iBUG points), else the shape's larger extent."""
  corners = _OUTER_EYE_CORNERS.get(points.shape[-2])
  if corners:
    size = float(np.linalg.norm(points[corners[0]] - points[corners[1]]))
  else:
    size = float(np.ptp(points, axis=0).max())
  return max(size, 1e-6)


class OneEuroFilter:
  """Streaming filter over (L, 2) shapes at a fixed frame rate; `reset()` at a track break."""

  def __init__(self, settings: OneEuroSettings = OneEuroSettings(), fps: float = 25.0):
    if fps <= 0:
      raise ValueError(f"fps must be positive, got {fps}")
    self.settings, self.fps = settings, float(fps)
    self.reset()

  def reset(self) -> None:
    self._value = self._speed = None

  def __call__(self, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, np.float64)
    if self._value is None:
      self._value, self._speed = points, np.zeros(points.shape[:-1])
      return points.astype(np.float32)
    s = self.settings
    scale = _face_size(points)
    speed = np.linalg.norm(points - self._value, axis=-1) * self.fps / scale     # (L,)
    self._speed = self._speed + _alpha(s.speed_cutoff_hz, self.fps) * (speed - self._speed)
    alpha = _alpha(s.min_cutoff_hz + s.beta * self._speed, self.fps)[..., None]
    self._value = self._value + alpha * (points - self._value)
    return self._value.astype(np.float32)


def zero_phase_reference(track: np.ndarray, window: int = 11) -> np.ndarray:
  """An offline estimate of where tracked points really were: at each frame, a quadratic fitted
  by least squares to the `window` frames centred on it (Savitzky-Golay). Centred, so it has no
  lag; averaging, so read-out flicker cancels. (T, L, 2) -> (T - window + 1, L, 2): frames
  window // 2 ... T - 1 - window // 2."""
  if window < 3 or window % 2 == 0:
    raise ValueError(f"the reference window must be odd and >= 3, got {window}")
  track = np.asarray(track, np.float64)
  if len(track) < window:
    raise ValueError(f"a track of {len(track)} frames is shorter than the window {window}")
  offsets = np.arange(window) - window // 2
  weights = np.linalg.pinv(np.stack([np.ones(window), offsets, offsets ** 2], 1))[0]
  return sum(w * track[k:len(track) - window + 1 + k] for k, w in enumerate(weights))


def lag_cost(filtered: list[np.ndarray], raw: list[np.ndarray], window: int = 11) -> float:
  """How much farther filtered tracks lie from the zero-phase reference of their raw tracks
  than the raw tracks do: mean point distance in % of the reference's outer-eye-corner
  distance, over the frames the reference covers. Estimates a filter's accuracy cost on video
  without labels (negative: it removes more flicker than it adds lag)."""
  if len(filtered) != len(raw):
    raise ValueError(f"{len(filtered)} filtered tracks for {len(raw)} raw ones")
  references = [zero_phase_reference(r, window) for r in raw]
  sizes = [np.array([_face_size(p) for p in reference]) for reference in references]

  def distance(tracks):
    values = [np.linalg.norm(np.asarray(track, np.float64)[window // 2:len(track) - window // 2]
                             - reference, axis=-1).mean(-1) / size
              for track, reference, size in zip(tracks, references, sizes)]
    return 100 * float(np.concatenate(values).mean())
  return distance(filtered) - distance(raw)


def stabilise(tracks: list[np.ndarray], settings: OneEuroSettings = OneEuroSettings(),
              fps: float = 25.0) -> list[np.ndarray]:
  """Filters each continuous track (T, L, 2) from a fresh state: exactly what `Tracker` with a
  stabiliser reports for the same raw predictions."""
  out = []
  for track in tracks:
    f = OneEuroFilter(settings, fps)
    out.append(np.stack([f(p) for p in track]) if len(track) else np.asarray(track))
  return out
