"""Loader iterators: state round trip (same order after resume), host sharding, workers."""

import os

import numpy as np
import pytest
from absl import flags

from data_pipelines.image_folders import read_image_folder
from data_pipelines.image_pipeline import image_dataset
from data_pipelines.loader import host_shard, make_loader

YTF68_MINI = os.path.join(os.path.dirname(__file__), "fixtures", "ytf68_mini")


def dataset():
  records, _ = read_image_folder(YTF68_MINI)
  return image_dataset(records, 32, train=True, seed=5, samples_per_image=4)   # 24 elements


@pytest.mark.parametrize("workers", [0, 2])
def test_iterator_state_round_trip_resumes_the_same_order(workers):
  if not flags.FLAGS.is_parsed():  # Grain workers read absl flags; entry points parse them
    flags.FLAGS.mark_as_parsed()
  loader = make_loader(dataset(), batch_size=4, workers=workers)
  iterator = iter(loader)
  for _ in range(2):
    next(iterator)
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(3)]
  resumed = iter(make_loader(dataset(), batch_size=4, workers=workers))
  resumed.set_state(state)
  for a, b in zip(expected, [next(resumed) for _ in range(3)]):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["landmarks"], b["landmarks"])


def test_host_shards_are_disjoint_and_cover_the_dataset():
  full = dataset()
  keys = lambda ds: [ds[i]["landmarks"].tobytes() for i in range(len(ds))]
  shards = [keys(host_shard(full, i, 3)) for i in range(3)]
  assert sorted(sum(shards, [])) == sorted(keys(full))
  assert not set(shards[0]) & set(shards[1])
  with pytest.raises(ValueError, match="outside"):
    host_shard(full, 3, 3)


def test_epoch_tally_reports_skipped_samples(tmp_path, caplog):
  import logging
  import shutil
  from data_pipelines.image_pipeline import image_batch_dataset
  from data_pipelines.loader import EpochTally, iterate_epoch
  root = tmp_path / "set"
  shutil.copytree(YTF68_MINI, root)
  broken = root / "images" / "Aishwarya_Rai" / "Aishwarya_Rai_02.jpg"
  broken.write_bytes(b"not a jpeg")
  records, _ = read_image_folder(str(root))
  batches, _ = image_batch_dataset(records, 32, 3, train=True, samples_per_image=2,
                                   skip_bad_samples=True)
  tally = EpochTally()
  with caplog.at_level(logging.INFO):
    seen = sum(1 for _ in iterate_epoch(make_loader(batches), tally))
  assert seen == tally.batches == 4 and tally.samples == 12 and tally.skipped == 2
  assert "2 bad sample(s) skipped" in caplog.text
