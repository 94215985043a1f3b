"""Batch composition shared by the image and clip pipelines."""

from __future__ import annotations

import logging

import numpy as np

from data_pipelines.pts import DataError


def identity_disjoint_batches(identities: list[str], batch_size: int, seed: int
                              ) -> tuple[list[list[int]], int]:
  """Groups item indices into batches with pairwise different identities.

  Each batch takes one random item from each of the `batch_size` identities with the most items
  left (random tie-break), which keeps large identities from being stranded at the end.
  Deterministic given `seed`. Returns (batches, number of items left over).
  """
  rng = np.random.default_rng(seed)
  queues: dict[str, list[int]] = {}
  for index in rng.permutation(len(identities)):
    queues.setdefault(identities[index], []).append(int(index))
  if len(queues) < batch_size:
    raise ValueError(f"batches of {batch_size} clips with no repeated identity need at least "
                     f"{batch_size} identities; the data has {len(queues)}")
  names = sorted(queues)
  batches = []
  while True:
    counts = np.array([len(queues[n]) for n in names])
    if np.count_nonzero(counts) < batch_size:
      break
    order = np.lexsort((rng.random(len(names)), -counts))[:batch_size]
    batches.append([queues[names[j]].pop() for j in order])
  return batches, int(sum(len(q) for q in queues.values()))


def host_part(batches: list[list], process_index: int, process_count: int) -> list[list]:
  """This process's contiguous part of every global batch: hosts load disjoint samples and
  together feed the whole batch (`jax.make_array_from_process_local_data` stitches them)."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} outside [0, {process_count})")
  if batches and len(batches[0]) % process_count:
    raise ValueError(f"global batch of {len(batches[0])} does not split over {process_count} "
                     "processes")
  part = len(batches[0]) // process_count if batches else 0
  return [b[process_index * part:(process_index + 1) * part] for b in batches]


def identity_index(names) -> dict[str, int]:
  """Identity name -> class id, sorted by name so the mapping does not depend on file order;
  empty names (unknown identity) get no id."""
  return {name: i for i, name in enumerate(sorted({n for n in names if n}))}


def load_or_mask(load, placeholder, skip_bad_samples: bool, what: str):
  """(load(), True), or, when it raises `DataError` and `skip_bad_samples` is on,
  (placeholder(), False) with a warning: the batch keeps its shape and `valid` masks the sample
  (the loss ignores it; `loader.iterate_epoch` counts it)."""
  try:
    return load(), True
  except DataError as e:
    if not skip_bad_samples:
      raise
    logging.warning("skipping bad %s: %s", what, e)
    return placeholder(), False
