"""Synthetic talking-face videos with exact 68-point ground truth, deterministic by seed.

Each identity has its own face geometry (a deformed 3D version of a 68-point template) and
appearance (skin, eye, brow, lip and background colours). In every video the head pose (yaw,
pitch, roll, scale, translation) and the expression (mouth opening, smile, blinks, brow raise)
follow smooth random trajectories; optional moving occluders, illumination drift, blur and noise
make hard cases. Landmarks are the projected 3D points, so they are exact by construction.

The defaults make the hard cases common enough for the recurrent modules to matter: about half
of the videos reach |yaw| > 40 deg and half carry an occluder that crosses the face.

`write_300vw_layout` and `write_image_folder_layout` store a dataset in the real on-disk formats,
so the synthetic data goes through exactly the readers and loaders real data uses.
"""

from __future__ import annotations

import csv
import dataclasses
import os

import cv2
import numpy as np

from data_pipelines.pts import write_pts

# Box-normalised mean of the 2,649 ytf68 training shapes (data_pipelines.image_folders.mean_shape).
TEMPLATE_2D = np.array([
    -0.484, -0.270, -0.474, -0.144, -0.451, -0.029, -0.423, 0.083, -0.379, 0.206, -0.308, 0.311,
    -0.230, 0.378, -0.129, 0.438, 0.022, 0.473, 0.170, 0.429, 0.266, 0.368, 0.338, 0.298,
    0.404, 0.197, 0.441, 0.072, 0.461, -0.039, 0.478, -0.154, 0.480, -0.282, -0.368, -0.391,
    -0.311, -0.430, -0.241, -0.441, -0.177, -0.434, -0.118, -0.418, 0.117, -0.421, 0.173, -0.437,
    0.237, -0.443, 0.308, -0.432, 0.364, -0.396, 0.003, -0.282, 0.005, -0.196, 0.009, -0.116,
    0.012, -0.047, -0.069, 0.004, -0.035, 0.014, 0.011, 0.023, 0.054, 0.011, 0.087, 0.001,
    -0.275, -0.290, -0.231, -0.305, -0.173, -0.307, -0.122, -0.283, -0.169, -0.267, -0.229, -0.266,
    0.125, -0.286, 0.178, -0.309, 0.235, -0.311, 0.280, -0.294, 0.234, -0.270, 0.175, -0.269,
    -0.156, 0.163, -0.098, 0.127, -0.026, 0.105, 0.012, 0.112, 0.048, 0.104, 0.118, 0.125,
    0.172, 0.159, 0.116, 0.209, 0.069, 0.238, 0.014, 0.245, -0.042, 0.241, -0.095, 0.213,
    -0.145, 0.161, -0.037, 0.147, 0.011, 0.145, 0.060, 0.147, 0.159, 0.157, 0.059, 0.180,
    0.012, 0.186, -0.037, 0.182], np.float32).reshape(68, 2)

JAW, BROWS, NOSE_BRIDGE, NOSTRILS = range(0, 17), range(17, 27), range(27, 31), range(31, 36)
LEFT_EYE, RIGHT_EYE, OUTER_LIPS, INNER_LIPS = range(36, 42), range(42, 48), range(48, 60), range(60, 68)


def _template_3d() -> np.ndarray:
  """Template with depth: an ellipsoidal face, the nose standing out towards the tip."""
  xy = TEMPLATE_2D.astype(np.float64)
  z = 0.45 * np.sqrt(np.clip(1.0 - (xy[:, 0] / 0.62) ** 2 - (xy[:, 1] / 0.9) ** 2, 0.0, 1.0))
  z[list(NOSE_BRIDGE)] += np.linspace(0.02, 0.16, 4)
  z[list(NOSTRILS)] += 0.08
  return np.concatenate([xy, z[:, None]], axis=1)


TEMPLATE_3D = _template_3d()


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  size: int = 128                  # frame side (px)
  num_frames: int = 60
  max_yaw_deg: float = 70.0        # trajectories reach +-max_yaw in "large pose" videos
  large_pose_prob: float = 0.5     # share of videos whose yaw range reaches max_yaw
  occluder_prob: float = 0.5       # share of videos with a moving occluder
  illumination_prob: float = 0.5   # share of videos with brightness/gradient drift
  blur_prob: float = 0.3
  noise_std: float = 4.0           # additive Gaussian noise, grey levels (0 = none)
  blinks: bool = True


@dataclasses.dataclass(frozen=True)
class Identity:
  shape: np.ndarray                # (68, 3) deformed template
  skin: tuple
  iris: tuple
  brow: tuple
  lips: tuple
  background: tuple


def make_identity(seed: int) -> Identity:
  rng = np.random.default_rng([seed, 1])
  shape = TEMPLATE_3D.copy()
  shape[:, 0] *= rng.uniform(0.88, 1.12)                          # face width
  shape[:, 1] *= rng.uniform(0.9, 1.1)                            # face height
  eyes = list(LEFT_EYE) + list(RIGHT_EYE)
  shape[eyes, 0] *= rng.uniform(0.92, 1.08)                        # eye spacing
  shape[list(NOSTRILS) + [30], 1] += rng.uniform(-0.03, 0.03)      # nose length
  mouth = list(OUTER_LIPS) + list(INNER_LIPS)
  shape[mouth, 0] *= rng.uniform(0.85, 1.15)                       # mouth width
  shape[list(JAW)[4:13], 1] *= rng.uniform(0.95, 1.08)             # chin
  shape += rng.normal(scale=0.006, size=shape.shape)
  colour = lambda low, high: tuple(int(c) for c in rng.integers(low, high, size=3))
  skin = np.array([rng.uniform(90, 235)] * 3) * np.array([1.0, rng.uniform(0.75, 0.9),
                                                         rng.uniform(0.6, 0.8)])
  return Identity(shape=shape, skin=tuple(int(c) for c in skin), iris=colour(10, 120),
                  brow=colour(10, 90), lips=(int(skin[0] * 0.8), int(skin[1] * 0.45),
                                             int(skin[2] * 0.5)),
                  background=colour(0, 256))


def _smooth_trajectory(rng, num_frames, amplitude, period_frames=(25, 120)):
  """Sum of three sinusoids with random periods and phases, within +-amplitude."""
  t = np.arange(num_frames)
  total = np.zeros(num_frames)
  for weight in (0.6, 0.3, 0.1):
    period = rng.uniform(*period_frames)
    total += weight * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
  return amplitude * total


def _rotation(yaw, pitch, roll):
  cy, sy, cp, sp, cr, sr = (np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch),
                            np.cos(roll), np.sin(roll))
  r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
  r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
  r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
  return r_roll @ r_pitch @ r_yaw


def _expression(shape, mouth_open, smile, blink, brow_raise):
  s = shape.copy()
  for i in (56, 57, 58, 65, 66, 67):                               # lower lip down
    s[i, 1] += 0.09 * mouth_open
  for i in (6, 7, 8, 9, 10):                                        # jaw follows
    s[i, 1] += 0.05 * mouth_open
  for i in (50, 51, 52, 61, 62, 63):                                # upper lip up a little
    s[i, 1] -= 0.015 * mouth_open
  for left, right in ((48, 54), (60, 64)):                          # smile: corners out and up
    s[left] += (-0.03 * smile, -0.03 * smile, 0)
    s[right] += (0.03 * smile, -0.03 * smile, 0)
  for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):     # blink: lids meet
    s[upper, 1] += blink * (s[lower, 1] - s[upper, 1]) * 0.9
  s[list(BROWS), 1] -= 0.05 * brow_raise
  return s


def render_video(identity_seed: int, video_seed: int, config: SyntheticConfig = SyntheticConfig()
                 ) -> tuple[np.ndarray, np.ndarray, dict]:
  """Frames uint8 (T, S, S, 3) RGB, landmarks float32 (T, 68, 2) 0-based pixels, and the
  per-frame pose/expression/occlusion parameters (for analysis and for tests)."""
  identity = make_identity(identity_seed)
  rng = np.random.default_rng([identity_seed, video_seed, 2])
  n, size = config.num_frames, config.size
  large = rng.random() < config.large_pose_prob
  yaw_amp = np.deg2rad(config.max_yaw_deg if large else rng.uniform(10, 30))
  params = {
      "yaw": _smooth_trajectory(rng, n, yaw_amp) + rng.uniform(-0.1, 0.1),
      "pitch": _smooth_trajectory(rng, n, np.deg2rad(rng.uniform(5, 20))),
      "roll": _smooth_trajectory(rng, n, np.deg2rad(rng.uniform(5, 20))),
      "scale": size * (0.5 + 0.06 * _smooth_trajectory(rng, n, 1.0) + rng.uniform(-0.05, 0.08)),
      "tx": _smooth_trajectory(rng, n, 0.06 * size),
      "ty": _smooth_trajectory(rng, n, 0.05 * size),
      "mouth_open": np.clip(_smooth_trajectory(rng, n, 1.0, (10, 40)), 0, 1),
      "smile": np.clip(_smooth_trajectory(rng, n, 1.0, (30, 90)), 0, 1),
      "brow_raise": np.clip(_smooth_trajectory(rng, n, 1.0, (30, 90)), 0, 1),
      "blink": np.zeros(n),
  }
  if config.blinks:
    for start in np.nonzero(rng.random(n) < 0.04)[0]:
      params["blink"][start:start + 3] = (1.0, 1.0, 0.5)[:len(params["blink"][start:start + 3])]
  params["blink"] = np.maximum(params["blink"], 0.0)

  occluder = None
  if rng.random() < config.occluder_prob:
    start, end = rng.uniform(0, size, 2), rng.uniform(0, size, 2)
    # Aim the path through the face centre half of the time: the hard case.
    if rng.random() < 0.5:
      start = np.array([0.0 if rng.random() < 0.5 else size, rng.uniform(0.3, 0.7) * size])
      end = size - start
    occluder = {"start": start, "end": end, "radius": rng.uniform(0.12, 0.25) * size,
                "colour": tuple(int(c) for c in rng.integers(0, 256, 3)),
                "ellipse": bool(rng.random() < 0.5)}
  gain = (1.0 + _smooth_trajectory(rng, n, 0.45) if rng.random() < config.illumination_prob
          else np.ones(n))
  gradient = rng.uniform(-0.4, 0.4, size=2) if rng.random() < config.illumination_prob else None
  blur = rng.random() < config.blur_prob

  background = np.empty((size, size, 3), np.float32)
  background[:] = identity.background
  ys, xs = np.mgrid[0:size, 0:size] / size
  background *= (0.7 + 0.3 * np.sin(6 * xs + rng.uniform(0, 6)) * np.cos(4 * ys))[..., None]

  frames = np.empty((n, size, size, 3), np.uint8)
  landmarks = np.empty((n, 68, 2), np.float32)
  params["occluded"] = np.zeros(n, bool)
  for t in range(n):
    shape = _expression(identity.shape, params["mouth_open"][t], params["smile"][t],
                        params["blink"][t], params["brow_raise"][t])
    rotated = shape @ _rotation(params["yaw"][t], params["pitch"][t], params["roll"][t]).T
    centre = np.array([size / 2 + params["tx"][t], size / 2 + params["ty"][t]])
    points = rotated[:, :2] * params["scale"][t] + centre
    landmarks[t] = points
    image = _draw_face(background.copy(), points, rotated[:, 2], identity, params["yaw"][t])
    if occluder is not None:
      f = t / max(n - 1, 1)
      c = occluder["start"] * (1 - f) + occluder["end"] * f
      r = occluder["radius"]
      if occluder["ellipse"]:
        cv2.ellipse(image, (int(c[0]), int(c[1])), (int(r), int(r * 0.6)), 30.0, 0, 360,
                    occluder["colour"], -1, cv2.LINE_AA)
      else:
        cv2.rectangle(image, (int(c[0] - r), int(c[1] - r / 2)), (int(c[0] + r), int(c[1] + r / 2)),
                      occluder["colour"], -1, cv2.LINE_AA)
      params["occluded"][t] = bool(np.any(np.linalg.norm(points - c, axis=1) < r * 0.8))
    image *= gain[t]
    if gradient is not None:
      image *= (1.0 + gradient[0] * (xs - 0.5) + gradient[1] * (ys - 0.5))[..., None]
    if blur:
      image = cv2.GaussianBlur(image, (0, 0), 0.5 + 1.5 * abs(np.sin(t / 7.0)))
    if config.noise_std:
      image += rng.normal(scale=config.noise_std, size=image.shape)
    frames[t] = np.clip(image, 0, 255).astype(np.uint8)
  return frames, landmarks, params


def _poly(points, indices):
  return np.round(points[list(indices)] * 16).astype(np.int32)  # 4 fractional bits


def _draw_face(image, points, depth, identity, yaw):
  aa, shift = cv2.LINE_AA, 4
  skin = np.array(identity.skin, np.float32)
  # Head: hull of the jaw and the brows lifted towards a forehead.
  forehead = points[list(BROWS)] + (points[list(BROWS)] - points[list(NOSE_BRIDGE)][0]) * 0.6
  head = cv2.convexHull(np.round(np.concatenate([points[list(JAW)], forehead]) * 16)
                        .astype(np.int32))
  cv2.fillConvexPoly(image, head, tuple(float(c) for c in skin), aa, shift)
  # Side shading with the yaw: the far cheek is darker.
  darker = tuple(float(c) for c in skin * (0.75 - 0.2 * abs(np.sin(yaw))))
  # The cheek on the side the face turns towards: jaw half plus the nose line.
  far = (list(range(8, 17)) + [27, 28, 29, 30, 33] if yaw > 0
         else list(range(0, 9)) + [33, 30, 29, 28, 27])
  cv2.fillPoly(image, [_poly(points, far)], darker, aa, shift)
  for eye in (LEFT_EYE, RIGHT_EYE):
    cv2.fillPoly(image, [_poly(points, eye)], (235, 235, 230), aa, shift)
    cv2.polylines(image, [_poly(points, eye)], True, (40, 30, 30), 1, aa, shift)
    centre = points[list(eye)].mean(axis=0)
    height = np.ptp(points[list(eye)][:, 1])
    radius = max(1, int(round(min(height * 0.55, np.ptp(points[list(eye)][:, 0]) * 0.3) * 16)))
    if height > 1.0:
      cv2.circle(image, tuple(np.round(centre * 16).astype(int)), radius, identity.iris, -1, aa,
                 shift)
  for brow in (range(17, 22), range(22, 27)):
    cv2.polylines(image, [_poly(points, brow)], False, identity.brow, 2, aa, shift)
  cv2.polylines(image, [_poly(points, NOSE_BRIDGE)], False, tuple(float(c) for c in skin * 0.7),
                1, aa, shift)
  cv2.polylines(image, [_poly(points, NOSTRILS)], False, tuple(float(c) for c in skin * 0.55),
                1, aa, shift)
  cv2.fillPoly(image, [_poly(points, OUTER_LIPS)], identity.lips, aa, shift)
  cv2.fillPoly(image, [_poly(points, INNER_LIPS)], (40, 15, 20), aa, shift)
  return image


def write_300vw_layout(root: str, num_identities: int, videos_per_identity: int = 1,
                       seed: int = 0, config: SyntheticConfig = SyntheticConfig()) -> list[str]:
  """Renders videos into `<root>/<video_id>/vid.avi` + `annot/*.pts` (MJPG). A video id encodes
  its identity, `id<k>v<j>`; readers take the video id as identity, so use one video per
  identity unless identity labels are read from the ids. Returns the video ids."""
  ids = []
  for k in range(num_identities):
    for j in range(videos_per_identity):
      video_id = f"{seed:03d}id{k:04d}v{j}"
      frames, landmarks, _ = render_video(seed * 100003 + k, j, config)
      folder = os.path.join(root, video_id)
      os.makedirs(os.path.join(folder, "annot"), exist_ok=True)
      writer = cv2.VideoWriter(os.path.join(folder, "vid.avi"), cv2.VideoWriter_fourcc(*"MJPG"),
                               25, (config.size, config.size))
      for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
      writer.release()
      for t, points in enumerate(landmarks):
        write_pts(os.path.join(folder, "annot", f"{t + 1:06d}.pts"), points)
      ids.append(video_id)
  return ids


def write_image_folder_layout(root: str, num_identities: int, frames_per_identity: int,
                              val_identities: int = 0, seed: int = 0,
                              config: SyntheticConfig = SyntheticConfig()) -> str:
  """Renders stills into the ytf68 layout: `images/<identity>/<identity>_<frame>.png` with
  `.pts` beside them and `manifest.csv` (identity-disjoint `train` / `val` splits). Frames are
  spread over one long video per identity so poses differ. Returns the manifest path."""
  spaced = dataclasses.replace(config, num_frames=frames_per_identity * 7)
  rows = []
  for k in range(num_identities):
    name = f"synth{seed:03d}_{k:04d}"
    frames, landmarks, _ = render_video(seed * 100003 + k, 0, spaced)
    split = "val" if k >= num_identities - val_identities else "train"
    for f in range(frames_per_identity):
      rel = f"images/{name}/{name}_{f:03d}.png"
      path = os.path.join(root, rel)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      cv2.imwrite(path, cv2.cvtColor(frames[f * 7], cv2.COLOR_RGB2BGR))
      write_pts(path[:-4] + ".pts", landmarks[f * 7])
      rows.append({"image": rel, "identity": name, "video": "0", "frame": str(f),
                   "split": split, "width": config.size, "height": config.size})
  manifest = os.path.join(root, "manifest.csv")
  with open(manifest, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return manifest
