"""From a random-access `grain.MapDataset` to the iterator a training loop consumes: per-host
sharding, batching, worker processes, read options sized for small hosts, checkpointable state.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Iterable, Iterator

import grain
import numpy as np


def host_shard(dataset: grain.MapDataset, process_index: int, process_count: int
               ) -> grain.MapDataset:
  """Elements process_index, process_index + process_count, ... of the (already shuffled)
  dataset: hosts read disjoint parts and together cover it."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} outside [0, {process_count})")
  return dataset[process_index::process_count]


def make_loader(dataset: grain.MapDataset, *, batch_size: int | None = None, workers: int = 0,
                read_threads: int = 2, prefetch: int = 8) -> grain.IterDataset:
  """Batched (drop_remainder) iterable; `workers` > 0 decodes in that many processes.

  Grain's default ReadOptions (16 threads, 500-element prefetch) were 15x slower on 2 cores
  and ran workers out of memory; 1-2 threads and a prefetch of 4-8 were fast
  (docs/engineering_notes.md). The iterator's `get_state()` / `set_state()` make a resumed run
  see the same order.
  """
  if batch_size:
    dataset = dataset.batch(batch_size, drop_remainder=True)
  iterable = dataset.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                                       prefetch_buffer_size=prefetch))
  if workers:
    iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return iterable


@dataclasses.dataclass
class EpochTally:
  """Counts batches, samples and skipped samples (`valid` False) of one pass over a loader."""
  batches: int = 0
  samples: int = 0
  skipped: int = 0

  def report(self) -> str:
    return (f"epoch: {self.batches} batches, {self.samples} samples, "
            f"{self.skipped} bad sample(s) skipped")


def iterate_epoch(batches: Iterable[dict], tally: EpochTally) -> Iterator[dict]:
  """Yields the batches of one epoch, counting into `tally`; at the end logs its report (the
  count of bad samples skipped under `skip_bad_samples`)."""
  for batch in batches:
    valid = np.asarray(batch["valid"]) if "valid" in batch else None
    tally.batches += 1
    tally.samples += len(batch["image"])
    if valid is not None:
      tally.skipped += int((~valid).sum())
    yield batch
  logging.info(tally.report())
