r"""Tracking speed of `experiments/track.py`'s loop, end to end and split by part, for the JAX
model and its ONNX export on onnxruntime, with and without the overlay video.

  python benchmarks/track_speed.py --video=/path/to/single_face.mp4 [--checkpoint=...] \
    [--repeats=3] [--ort_threads=1,2]

Each configuration tracks the whole video `--repeats` times (a fresh Tracker each time, after one
untimed run that compiles the model); the table gives medians and the range over the repeats of
frames/s of the tracker alone (`update()`: crop, model, points back to the frame, stabiliser,
verification) and end to end (decode to written files), and the median milliseconds per frame
of every part
(`TrackResult.part_seconds`, frames after the first). The settings are track.py's defaults:
One-Euro stabiliser on, a face check every 10th frame. The last line gives the model's FLOPs per
frame (XLA's count of the batch-1 inference) and the frames/s that would take at --peak_gflops.
"""

from __future__ import annotations

import statistics
import tempfile

from absl import app, flags

from rednet_jax.inference.landmark_model import Tracker, load_model
from rednet_jax.inference.stabiliser import OneEuroFilter
from rednet_jax.inference.video_tracking import track_video, video_info

_VIDEO = flags.DEFINE_string("video", None, "Video file.", required=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Exported (Orbax) model; default: shipped.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per configuration.")
_ORT_THREADS = flags.DEFINE_list("ort_threads", ["1", "2"], "onnxruntime intra-op threads to "
                                 "measure (empty: skip onnxruntime).")
_PEAK = flags.DEFINE_float("peak_gflops", 166.0, "fp32 peak of the machine (2 Zen 4 cores x "
                           "2.6 GHz x 32 FLOP/cycle) for the bound on the last line.")
PARTS = ("decode", "scene_cut", "verify", "crop", "model", "uncrop", "stabilise", "write_pts",
         "draw", "encode")


def _run(model, overlay: bool, out_dir: str):
  tracker = Tracker(model, stabiliser=OneEuroFilter(fps=video_info(_VIDEO.value)["fps"]),
                    verify_every=10)
  return track_video(_VIDEO.value, tracker, out_dir, overlay=overlay).summary()


def main(argv):
  del argv
  model = load_model(_CHECKPOINT.value)
  backends = [("jax", model)]
  scratch = tempfile.mkdtemp(prefix="track_speed_")
  if _ORT_THREADS.value:
    from rednet_jax.inference import onnx_export  # pylint: disable=g-import-not-at-top
    path = onnx_export.export_landmark_model(model, f"{scratch}/onnx")
    for threads in _ORT_THREADS.value:
      backends.append((f"onnxruntime, {threads} thread(s)",
                       onnx_export.load_onnx_model(path, int(threads))))
  rows = []
  for name, backend in backends:
    for overlay in (False, True):
      _run(backend, overlay, f"{scratch}/warmup")
      runs = [_run(backend, overlay, f"{scratch}/run") for _ in range(_REPEATS.value)]
      rows.append((name, overlay, runs))
  frames = rows[0][2][0]["frames"]
  print(f"\n{_VIDEO.value}: {frames} frames; medians of {_REPEATS.value} runs (range); ms per "
        "frame from the second frame on\n")
  print("| backend | overlay | frames/s (tracker) | frames/s (end to end) | "
        + " | ".join(PARTS) + " |")
  print("| --- | --- | --- | --- | " + " | ".join("---" for _ in PARTS) + " |")
  for name, overlay, runs in rows:
    fps = [r["fps"] for r in runs]
    e2e = [r["fps_end_to_end"] for r in runs]
    parts = [statistics.median(r["ms_per_frame"].get(p, 0.0) for r in runs) for p in PARTS]
    print(f"| {name} | {'yes' if overlay else 'no'} | {statistics.median(fps):.1f} "
          f"({min(fps):.1f}-{max(fps):.1f}) | {statistics.median(e2e):.1f} "
          f"({min(e2e):.1f}-{max(e2e):.1f}) | " + " | ".join(f"{p:.2f}" for p in parts) + " |")
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  crops = np.zeros((1, model.size, model.size, 3), np.uint8)
  init = np.broadcast_to(model.mean_shape, (1, *model.mean_shape.shape)).astype(np.float32)
  gflop = model._apply.lower(model.variables, crops, init, model.initial_carry(1),  # pylint: disable=protected-access
                             maps=False).cost_analysis()["flops"] / 1e9
  print(f"\nmodel: {gflop:.2f} GFLOP per frame (XLA's count, batch 1); at {_PEAK.value:.0f} "
        f"GFLOP/s that is {_PEAK.value / gflop:.0f} frames/s for the model alone "
        f"({jax.devices()[0].device_kind})")


if __name__ == "__main__":
  app.run(main)
