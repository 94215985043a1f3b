"""Loader throughput: frames/s of the image pipeline and the clip-batch pipeline at 128 px.

  python benchmarks/data_pipeline.py --images=/path/to/ytf68 --workers=2

Images: a 300-W-style folder (default: the 6-image test fixture) and synthetic stills in the
ytf68 layout; clips: synthetic videos in the 300-VW layout. All batches are identity-disjoint.
Each pipeline runs through `mp_prefetch` with --workers processes and ReadOptions sized for
small hosts (docs/engineering_notes.md); the first batch is not timed.
"""

import os
import sys
import tempfile
import time

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


def main(argv):
  del argv
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
  from data_pipelines.clip_pipeline import clip_batch_dataset
  from data_pipelines.image_folders import read_image_folder
  from data_pipelines.image_pipeline import image_batch_dataset
  from data_pipelines.synthetic import SyntheticConfig, write_300vw_layout
  from data_pipelines.synthetic import write_image_folder_layout
  from data_pipelines.video_300vw import read_300vw
  rows = []

  def image_row(name, folder):
    records, _ = read_image_folder(folder)
    batch = min(16, len({r.identity for r in records}))
    dataset, _ = image_batch_dataset(records, FLAGS.size, batch, train=True,
                                     samples_per_image=200, identity_disjoint=True)
    rows.append((f"{name}: {len(records)} images, augmented, identity-disjoint batches of "
                 f"{batch}", throughput(dataset, min(FLAGS.batches, len(dataset) - 1), batch)))

  folder = FLAGS.images or os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures",
                                        "ytf68_mini")
  image_row("ytf68 layout" if FLAGS.images else "ytf68 fixture", folder)
  with tempfile.TemporaryDirectory() as root:
    write_image_folder_layout(os.path.join(root, "stills"), 40, 5,
                              config=SyntheticConfig(size=256, num_frames=1))
    image_row("synthetic stills (256 px)", os.path.join(root, "stills"))
    write_300vw_layout(os.path.join(root, "videos"), num_identities=8,
                       config=SyntheticConfig(size=256, num_frames=60))
    videos, _ = read_300vw(os.path.join(root, "videos"))
    clips, _ = clip_batch_dataset(videos, clip_length=10, batch_size=5, out_size=FLAGS.size,
                                  clips_per_video=100, seed=0)
    rows.append(("synthetic videos (256 px MJPG): T=10 clips, 5 per batch, identity-disjoint",
                 throughput(clips, min(FLAGS.batches, len(clips) - 1), 50)))
  print(f"\nGrain loaders, {FLAGS.workers} workers, {FLAGS.size} px crops, {os.cpu_count()} CPUs\n")
  print("| pipeline | frames/s |")
  print("| --- | --- |")
  for name, fps in rows:
    print(f"| {name} | {fps:.0f} |")


if __name__ == "__main__":
  app.run(main)
