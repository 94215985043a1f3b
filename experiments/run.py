r"""Trains a curriculum stage (or the whole curriculum) from a config.

  python experiments/run.py --config=video_stage --workdir=$HOME/runs/rednet68
  python experiments/run.py --config=video_stage:cpu --config.data.batch_size=8 --workdir=...
  python experiments/run.py --config=path/to/my_config.py:ARG --workdir=...

A bare name means `experiments/configs/NAME.py`; `--config.a.b=v` overrides a field. Re-running
the same command resumes an interrupted run.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from rednet_jax import configs, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file[:preset].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and figures go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  sys.argv = configs.resolve_config_argument(sys.argv)
  app.run(main)
