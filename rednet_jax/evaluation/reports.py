"""Figures and videos written after a stage: CED curves, the K-step refinement on a few faces,
and held-out clips with the tracked landmarks drawn on them."""

from __future__ import annotations

import os

import cv2
import matplotlib
import numpy as np

from rednet_jax.evaluation import metrics
from rednet_jax.inference.mp4 import Mp4Writer

matplotlib.use("Agg")  # files only; no display on training machines
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position


def ced_plot(errors_by_name: dict[str, np.ndarray], path: str, max_error: float = 0.10) -> None:
  """Cumulative error distribution: share of frames with inter-ocular NME <= x, one curve per
  entry (e.g. per curriculum stage), x up to `max_error`."""
  thresholds = np.linspace(0.0, max_error, 201)
  fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
  for name, errors in errors_by_name.items():
    errors = np.asarray(errors)
    ced = (errors[None, :] <= thresholds[:, None]).mean(axis=1)
    auc = metrics.ced_auc(errors, max_error)      # the number the summaries report
    ax.plot(100 * thresholds, ced, label=f"{name} (NME {100 * errors.mean():.2f} %, "
                                         f"AUC@{100 * max_error:.0f} {auc:.3f})")
  ax.set_xlabel("NME (% of inter-ocular distance)")
  ax.set_ylabel("fraction of frames")
  ax.set_xlim(0, 100 * max_error)
  ax.set_ylim(0, 1)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def error_over_frames_plot(series: dict[str, np.ndarray], path: str, title: str = "") -> None:
  """Per-frame NME (% io) of a tracked video, one line per entry (e.g. raw and stabilised)."""
  fig, ax = plt.subplots(figsize=(8, 3), dpi=120)
  for name, errors in series.items():
    ax.plot(np.asarray(errors), lw=0.8, label=f"{name} (mean {np.mean(errors):.2f} %)")
  ax.set_xlabel("frame")
  ax.set_ylabel("NME (% io)")
  ax.set_ylim(bottom=0)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="upper right")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def refinement_figure(images: np.ndarray, init_points: np.ndarray, step_points: np.ndarray,
                      landmarks: np.ndarray, path: str) -> None:
  """Rows: faces; columns: z_0, the shape after each of the K spatial steps, ground truth.

  images (N, S, S, 3) uint8, init_points / landmarks (N, L, 2), step_points (K, N, L, 2)."""
  n, k = len(images), len(step_points)
  titles = ["z_0"] + [f"step {i + 1}" for i in range(k)] + ["ground truth"]
  fig, axes = plt.subplots(n, k + 2, figsize=(1.8 * (k + 2), 1.8 * n), dpi=110, squeeze=False)
  for row in range(n):
    shapes = [init_points[row]] + [step_points[i, row] for i in range(k)] + [landmarks[row]]
    for col, shape in enumerate(shapes):
      ax = axes[row, col]
      ax.imshow(images[row])
      ax.scatter(shape[:, 0], shape[:, 1], s=3, c="lime" if col == k + 1 else "red")
      ax.set_axis_off()
      if row == 0:
        ax.set_title(titles[col], fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def overlay_video(frames: np.ndarray, points: np.ndarray, landmarks: np.ndarray | None,
                  path: str, scale: int = 4, fps: int = 10) -> None:
  """An H.264 MP4 of frames (N, S, S, 3) uint8 RGB with predicted points (N, L, 2) in red and,
  when given, the ground truth in green; upscaled `scale` times so the points are visible."""
  size = frames.shape[1] * scale
  writer = Mp4Writer(path, fps)
  for t, frame in enumerate(frames):
    image = cv2.resize(frame, (size, size), interpolation=cv2.INTER_NEAREST)
    if landmarks is not None:
      for x, y in landmarks[t] * scale:
        cv2.circle(image, (int(round(x)), int(round(y))), 2, (0, 200, 0), -1, cv2.LINE_AA)
    for x, y in points[t] * scale:
      cv2.circle(image, (int(round(x)), int(round(y))), 2, (255, 0, 0), -1, cv2.LINE_AA)
    writer.write(image)
  writer.close()


STAGE_OUTPUTS = ("ced_plot", "refinement_figure", "overlay_video")


def write_stage_figures(details: dict, out_dir: str, outputs) -> list[str]:
  """The figures named in `outputs` ('ced_plot', 'refinement_figure', 'overlay_video') from an
  evaluation's details; returns the paths written."""
  unknown = set(outputs) - set(STAGE_OUTPUTS)
  if unknown:
    raise ValueError(f"unknown outputs {sorted(unknown)}; known: {list(STAGE_OUTPUTS)}")
  written = []
  if "ced_plot" in outputs:
    written.append(os.path.join(out_dir, "ced.png"))
    ced_plot({os.path.basename(out_dir.rstrip("/")): details["errors"]}, written[-1])
  if "refinement_figure" in outputs:
    n = min(4, len(details["image"]))
    written.append(os.path.join(out_dir, "refinement.png"))
    refinement_figure(details["image"][:n, 0], details["init_points"][:n, 0],
                      details["points"][:, :n, 0], details["landmarks"][:n, 0], written[-1])
  if "overlay_video" in outputs:
    n = min(3, len(details["image"]))      # a few held-out clips, one after the other
    frames = details["image"][:n].reshape(-1, *details["image"].shape[2:])
    points = details["points"][-1, :n].reshape(-1, *details["points"].shape[-2:])
    landmarks = details["landmarks"][:n].reshape(-1, *details["landmarks"].shape[-2:])
    written.append(os.path.join(out_dir, "tracked.mp4"))
    overlay_video(frames, points, landmarks, written[-1])
  return written
