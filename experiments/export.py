r"""Exports a stage of a training run as a small inference model (params and BatchNorm
statistics, no optimiser state) that `experiments/track.py`, `predict.py`, `evaluate.py` and
`rednet_jax.inference.landmark_model.load_model` read, or as an ONNX model for onnxruntime
(`rednet_jax.inference.onnx_export.load_onnx_model`).

  python experiments/export.py --workdir=/tmp/ytf68 --stage=video --out=/tmp/ytf68_model
  python experiments/export.py --workdir=/tmp/ytf68 --stage=video --format=onnx --out=/tmp/ytf68_onnx
  python experiments/export.py --model=shipped --format=onnx --batch_size=1 --out=/tmp/shipped_onnx

The model is built from the config the stage recorded in its folder (`config.json`); the
stage's held-out metrics (`final.json`), its config and the environments it was trained in
(`runs.jsonl`) go into the model's `model.json`. `--config` is needed only for a stage trained
before stages recorded their config; given for a stage that has a record, it must agree.
`--readout` / `--readout_window` store a read-out other than the trained one (chosen with
`benchmarks/readout_sweep.py`); model.json records both.

`--model` takes an exported model folder instead of a run (`shipped`: the model in
`rednet_jax/assets/faces300w_cpu`), e.g. to store another read-out or to convert it to ONNX.

`--format=onnx` writes `model.onnx` (the inference function for batches of `--batch_size`
crops: crops uint8 (B, size, size, 3), init_points (B, L, 2) and the LSTM carry in; the last
step's points, confidence and carry out) and `model.json` (the description, with an "onnx"
entry). The export is then run beside the JAX model on random crops, twice (the second time
from each one's own points and carry), and the command fails when the points differ by more
than ONNX_TOLERANCE_PX. Needs `pip install -e '.[onnx]'`.
"""

import json
import os
import sys

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from rednet_jax import cli
from rednet_jax.inference import landmark_model
from rednet_jax.inference import onnx_export
from rednet_jax.training import configs

# Largest difference (crop px) between the ONNX and the JAX model's points that passes.
ONNX_TOLERANCE_PX = 1e-2
ONNX_CHECK_CROPS = 4

_CONFIG = config_flags.DEFINE_config_file("config", None, "Only for a stage without config.json: "
                                          "the config file[:preset] it was trained with.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's workdir (or --model).")
_STAGE = flags.DEFINE_string("stage", None, "Stage to export (may be left out when the workdir "
                             "holds one stage).")
_MODEL = flags.DEFINE_string("model", None, "An exported model folder to export instead of a "
                             "run ('' or 'shipped': the shipped model).")
_OUT = flags.DEFINE_string("out", None, "Folder to write the model into.", required=True)
_FORMAT = flags.DEFINE_enum("format", "orbax", ["orbax", "onnx"],
                            "orbax: model.json + variables/ (load_model); onnx: model.json + "
                            "model.onnx (load_onnx_model).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 1, "--format=onnx: the batch size the graph "
                                   "is exported for.", lower_bound=1)
_READOUT = flags.DEFINE_string("readout", None,
                               "Store this read-out instead of the trained one.")
_READOUT_WINDOW = flags.DEFINE_integer("readout_window", None, "Store this sub-pixel read-out "
                                       "window (odd, px) instead of the trained one.")


def _stage_config():
  config = _CONFIG.value
  if config is not None and "curriculum" in config:
    stage = _STAGE.value or config.curriculum[-1]
    if stage not in config:
      raise configs.ConfigError(f"--stage={stage}: the config's stages are "
                                f"{list(config.curriculum)}")
    config = config[stage]
  return config


def _check_onnx(model, out: str) -> None:
  b = _BATCH_SIZE.value
  crops = np.random.default_rng(0).integers(0, 256, (max(ONNX_CHECK_CROPS, b), model.size,
                                                     model.size, 3), dtype=np.uint8)
  diffs = onnx_export.check_against_jax(model, out, crops)
  print(f"ONNX vs JAX on {len(crops)} random crops from the mean shape, then from their own "
        f"outputs: largest difference {diffs['points']:.2e} px (points), "
        f"{diffs['confidence']:.2e} (confidence), {diffs['carry']:.2e} (carry)")
  if not diffs["points"] <= ONNX_TOLERANCE_PX:
    sys.exit(f"error: the ONNX model in {out} differs from the JAX model by {diffs['points']:.3g} "
             f"px, more than {ONNX_TOLERANCE_PX} px: do not use it (a converter bug; the files "
             "are kept for inspection)")


def _save_orbax(model, out: str, info: dict | None) -> str:
  """An exported model folder from a loaded one (other read-out fields, copied elsewhere)."""
  description = model.description
  out = landmark_model.save_model(out, description["model"], model.variables, model.size,
                                  model.box_scale, model.mean_shape,
                                  {**description.get("info", {}), **(info or {})})
  path = os.path.join(out, landmark_model.MODEL_FILE)
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  # Calibrations written into model.json later (min_confidence, presence_threshold).
  saved.update({k: v for k, v in description.items() if k not in saved})
  with open(path, "w", encoding="utf-8") as f:
    json.dump(saved, f, indent=1)
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if (_WORKDIR.value is None) == (_MODEL.value is None):
    raise app.UsageError("give either --workdir (a training run) or --model (an exported model)")
  if _MODEL.value is not None and (_STAGE.value or _CONFIG.value is not None):
    raise app.UsageError("--stage and --config go with --workdir, not --model")
  if _FORMAT.value != "onnx" and flags.FLAGS["batch_size"].present:
    raise app.UsageError("--batch_size is for --format=onnx")
  readout = {"readout": _READOUT.value, "readout_window": _READOUT_WINDOW.value}
  chosen = {k: v for k, v in readout.items() if v is not None}
  info = {"readout_at_export": chosen} if chosen else None
  if _WORKDIR.value is not None and _FORMAT.value == "orbax":     # the stage's own variables
    config = _stage_config()
    stage = _STAGE.value or (config.name if config is not None else None)
    out = landmark_model.export_run_stage(_WORKDIR.value, stage, _OUT.value, config, readout)
    print(f"exported {_WORKDIR.value} stage {stage or '(its only one)'} -> {out}")
    return
  if _MODEL.value is not None:
    source = (landmark_model.DEFAULT_MODEL_DIR if _MODEL.value in ("", "shipped")
              else _MODEL.value)
    model = landmark_model.load_model(source, readout)
  else:
    if _CONFIG.value is not None:
      raise app.UsageError("--config is not supported with --format=onnx: export the stage "
                           "with --format=orbax first, then convert that folder with --model")
    source = f"{_WORKDIR.value} stage {_STAGE.value or '(its only one)'}"
    model = landmark_model.load_run_stage(_WORKDIR.value, _STAGE.value, readout)
  if _FORMAT.value == "orbax":
    out = _save_orbax(model, _OUT.value, info)
  else:
    out = onnx_export.export_landmark_model(model, _OUT.value, _BATCH_SIZE.value, info=info)
    _check_onnx(model, out)
  print(f"exported {source} -> {out} ({_FORMAT.value})")


if __name__ == "__main__":
  cli.run(main, configs.resolve_config_argument)
