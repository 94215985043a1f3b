"""The same config over several seeds (initialisation, data order, augmentation): the spread a
user should expect from a run. On a curriculum `seed` applies to every stage.

  python experiments/sweep.py --config=quickstart --sweep=seeds:3 --workdir=/tmp/sweeps/seeds

Arg: the number of seeds (default 3): seeds 0 .. N-1.
"""

from rednet_jax.training.sweeps import sweep


def get_sweep(arg: str = ""):
  n = int(arg or 3)
  if n < 1:
    raise ValueError(f"the number of seeds must be positive, got {n}")
  return sweep("seed", range(n))
