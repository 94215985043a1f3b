"""Loader throughput: frames/s of the image pipeline and the clip-batch pipeline at 128 px.

  python benchmarks/data_pipeline.py --images=/path/to/ytf68 --workers=2

Images: a 300-W-style folder (default: the 6-image test fixture, repeated). Clips: a 300-VW
layout written to a temporary folder (6 videos x 60 frames, 640x360 MJPG, like 300-VW's
resolution class). Each pipeline runs through `mp_prefetch` with --workers processes and
ReadOptions sized for small hosts (NOTES.md); the first batch is not timed.
"""

import os
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

flags.DEFINE_string("images", None, "300-W-style folder (default: tests/fixtures/ytf68_mini)")
flags.DEFINE_integer("workers", 2, "Grain worker processes")
flags.DEFINE_integer("size", 128, "crop size")
flags.DEFINE_integer("batches", 40, "timed batches per pipeline")
FLAGS = flags.FLAGS


def throughput(dataset, batches, frames_per_batch):
  import grain  # pylint: disable=g-import-not-at-top
  iterator = iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=2,
                                                            prefetch_buffer_size=8))
                  .mp_prefetch(grain.MultiprocessingOptions(num_workers=FLAGS.workers)))
  next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * frames_per_batch / (time.perf_counter() - start)


def write_videos(root, n_videos=6, n_frames=60, size=(360, 640)):
  import cv2  # pylint: disable=g-import-not-at-top
  from data_pipelines.pts import write_pts
  rng = np.random.default_rng(0)
  base = np.stack([np.arange(68) % 9, np.arange(68) // 9], -1) * 14.0 + [250, 110]
  for v in range(n_videos):
    d = os.path.join(root, f"{v:03d}")
    os.makedirs(os.path.join(d, "annot"))
    writer = cv2.VideoWriter(os.path.join(d, "vid.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25,
                             (size[1], size[0]))
    for f in range(n_frames):
      writer.write(rng.integers(0, 255, size=(*size, 3), dtype=np.uint8))
      write_pts(os.path.join(d, "annot", f"{f + 1:06d}.pts"), base + f * 0.5)
    writer.release()


def main(argv):
  del argv
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
  from data_pipelines.clip_pipeline import clip_batch_dataset
  from data_pipelines.image_folders import read_image_folder
  from data_pipelines.image_pipeline import image_dataset
  folder = FLAGS.images or os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures",
                                        "ytf68_mini")
  records, _ = read_image_folder(folder)
  images = image_dataset(records, FLAGS.size, train=True, samples_per_image=1000).batch(32)
  image_fps = throughput(images, FLAGS.batches, 32)
  with tempfile.TemporaryDirectory() as root:
    write_videos(root)
    from data_pipelines.video_300vw import read_300vw
    videos, _ = read_300vw(root)
    clips, _ = clip_batch_dataset(videos, clip_length=10, batch_size=5, out_size=FLAGS.size,
                                  clips_per_video=100, seed=0)
    clip_fps = throughput(clips, min(FLAGS.batches, len(clips) - 1), 50)
  print(f"\nGrain loaders, {FLAGS.workers} workers, {FLAGS.size} px crops, {os.cpu_count()} CPUs\n")
  print("| pipeline | frames/s |")
  print("| --- | --- |")
  print(f"| images ({len(records)} files, augmented, batches of 32) | {image_fps:.0f} |")
  print(f"| clips (640x360 MJPG, T=10, 5 clips/batch, identity-disjoint) | {clip_fps:.0f} |")


if __name__ == "__main__":
  app.run(main)
