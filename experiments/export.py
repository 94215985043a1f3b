r"""Exports a trained stage as a small inference model (params and BatchNorm statistics, no
optimiser state) that `experiments/track.py`, `predict.py`, `evaluate.py` and
`rednet_jax.inference.load_model` read.

  python experiments/export.py --config=ytf68 --workdir=/tmp/ytf68 --stage=video \
    --out=/tmp/ytf68_model

--config (and its overrides) must be the one the stage was trained with; the stage's held-out
metrics (`final.json`) and its config are recorded in the model's `model.json`.
"""

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from rednet_jax import configs
from rednet_jax.inference import export_model

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file[:preset].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's workdir.")
_STAGE = flags.DEFINE_string("stage", None, "Stage to export (default: the config's last).")
_OUT = flags.DEFINE_string("out", None, "Folder to write the model into.")
flags.mark_flags_as_required(["config", "workdir", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if "curriculum" in config:
    stage = _STAGE.value or config.curriculum[-1]
    config = config[stage]
  stage_dir = os.path.join(_WORKDIR.value, config.name)
  final_path = os.path.join(stage_dir, "final.json")
  held_out = {}
  if os.path.exists(final_path):
    with open(final_path, encoding="utf-8") as f:
      held_out = json.load(f)
  info = {"stage": config.name, "held_out": held_out,
          "config": json.loads(config.to_json_best_effort())}
  out = export_model(os.path.join(stage_dir, "checkpoints"), config, _OUT.value, info)
  print(f"exported {stage_dir} -> {out}")


if __name__ == "__main__":
  sys.argv = configs.resolve_config_argument(sys.argv)
  app.run(main)
