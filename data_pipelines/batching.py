"""Batch composition shared by the image and clip pipelines."""

from __future__ import annotations

import numpy as np


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
