"""Browser-playable MP4 files from RGB frames (overlay videos of training and tracking)."""

from __future__ import annotations

import os

import numpy as np


class Mp4Writer:
  """H.264 (yuv420p, +faststart) MP4 from RGB frames, playable in browsers, through the ffmpeg
  binary that the imageio-ffmpeg wheel ships (OpenCV's wheels write only MPEG-4 part 2, which
  browsers do not play). Odd frame sides are padded by one pixel (yuv420p needs even sides)."""

  def __init__(self, path: str, fps: float):
    self.path, self.fps, self._gen, self._size = path, float(fps), None, None

  def write(self, rgb: np.ndarray) -> None:
    import imageio_ffmpeg  # pylint: disable=g-import-not-at-top
    h, w = rgb.shape[:2]
    if self._gen is None:
      self._size = (w + w % 2, h + h % 2)
      self._gen = imageio_ffmpeg.write_frames(
          self.path, self._size, fps=self.fps, codec="libx264", pix_fmt_out="yuv420p",
          # veryfast: 3x less encoding time than x264's default (medium) at this quality, and
          # no larger (640x360 tracking overlays; docs/engineering_notes.md).
          quality=None, output_params=["-crf", "20", "-preset", "veryfast",
                                       "-movflags", "+faststart"],
          macro_block_size=1, ffmpeg_log_level="error")
      self._gen.send(None)
    if (w + w % 2, h + h % 2) != self._size:
      raise ValueError(f"{self.path}: frame size {w}x{h} changed mid-video")
    if w % 2 or h % 2:
      rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)))
    self._gen.send(np.ascontiguousarray(rgb, dtype=np.uint8))

  def close(self) -> None:
    if self._gen is not None:
      self._gen.close()
      self._gen = None
    if not os.path.exists(self.path) or os.path.getsize(self.path) == 0:
      raise RuntimeError(f"{self.path}: the video writer produced no file")
