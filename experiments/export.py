r"""Exports a stage of a training run as a small inference model (params and BatchNorm
statistics, no optimiser state) that `experiments/track.py`, `predict.py`, `evaluate.py` and
`rednet_jax.inference.landmark_model.load_model` read.

  python experiments/export.py --workdir=/tmp/ytf68 --stage=video --out=/tmp/ytf68_model

The model is built from the config the stage recorded in its folder (`config.json`); the
stage's held-out metrics (`final.json`), its config and the environments it was trained in
(`runs.jsonl`) go into the model's `model.json`. `--config` is needed only for a stage trained
before stages recorded their config; given for a stage that has a record, it must agree.
`--readout` / `--readout_window` store a read-out other than the trained one (chosen with
`benchmarks/readout_sweep.py`); model.json records both.
"""

from absl import app, flags
from ml_collections import config_flags

from rednet_jax import cli
from rednet_jax.training import configs
from rednet_jax.inference.landmark_model import export_run_stage

_CONFIG = config_flags.DEFINE_config_file("config", None, "Only for a stage without config.json: "
                                          "the config file[:preset] it was trained with.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's workdir.", required=True)
_STAGE = flags.DEFINE_string("stage", None, "Stage to export (may be left out when the workdir "
                             "holds one stage).")
_OUT = flags.DEFINE_string("out", None, "Folder to write the model into.", required=True)
_READOUT = flags.DEFINE_string("readout", None,
                               "Store this read-out instead of the trained one.")
_READOUT_WINDOW = flags.DEFINE_integer("readout_window", None, "Store this sub-pixel read-out "
                                       "window (odd, px) instead of the trained one.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is not None and "curriculum" in config:
    stage = _STAGE.value or config.curriculum[-1]
    if stage not in config:
      raise configs.ConfigError(f"--stage={stage}: the config's stages are "
                                f"{list(config.curriculum)}")
    config = config[stage]
  stage = _STAGE.value or (config.name if config is not None else None)
  out = export_run_stage(_WORKDIR.value, stage, _OUT.value, config,
                         {"readout": _READOUT.value, "readout_window": _READOUT_WINDOW.value})
  print(f"exported {_WORKDIR.value} stage {stage or '(its only one)'} -> {out}")


if __name__ == "__main__":
  cli.run(main, configs.resolve_config_argument)
