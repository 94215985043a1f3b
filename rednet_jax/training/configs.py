"""Config plumbing: the fields every stage config has (with the paper's values), and the
`--config=NAME[:ARG]` resolution of `experiments/run.py`.

Configs are `ml_collections.ConfigDict`s made by `get_config(arg)` in one file per stage under
`experiments/configs/`. `--config=video_stage` means `experiments/configs/video_stage.py`; a path
works too; `:ARG` selects a preset of that file; `--config.a.b=v` overrides a field, and a field
the config does not have is an error.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import json
import os
import sys
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS_DIR = os.path.join(_REPO, "experiments", "configs")


def base_stage(name: str) -> ml_collections.ConfigDict:
  """Every field a stage has, set to the paper's values (RED-Net v1, ECCV 2016) where it gives
  them; comments mark our choices where it is silent."""
  c = ml_collections.ConfigDict()
  c.name = name                      # folder under the workdir
  c.seed = 0
  # CPU only: convolution gradients from canonical convolutions and GEMMs (models/conv.py), the
  # same values, faster on large maps (RED-Net v1 at 128 px: 17.9 -> 14.9 s per step); False:
  # XLA's own. GPUs and TPUs always use XLA's.
  c.cpu_conv_gradients = True
  # CPU only: False compiles the train and eval steps with XLA's own convolution and dot kernels
  # instead of its default YNNPACK fusions (models/conv.py, cpu_compiler_options): RED-Net v1
  # width 0.25 at 64 px: train step -7 %, forward -40 %; True: XLA's default.
  c.cpu_ynn_fusions = False
  c.num_epochs = 1
  c.total_steps = 0                  # > 0: stop after this many steps instead of num_epochs
  c.init_from = ""                   # previous stage: a stage name in this workdir, or a path
  c.init_keep_fresh = ()             # regexes of leaves not taken from init_from
  # ImageNet initialisation (paper): a local file the system's `load_pretrained` reads (v1: a
  # torch .pt or Keras .h5 VGG-16).
  c.pretrained_weights = ""

  c.data = ml_collections.ConfigDict()
  c.data.kind = "image_folder"       # see rednet_jax/training/input_pipeline.py
  c.data.root = ""
  c.data.train_split = "train"       # manifest split ("" : every annotated image under root)
  c.data.eval_split = "val"
  c.data.eval_root = ""              # image folders: held-out images from another folder
  # Image folders: a second training source (e.g. ytf68 beside 300-W) making up extra_weight of
  # the training samples of each epoch; the held-out split stays data.root's.
  c.data.extra_root = ""
  c.data.extra_split = "train"
  c.data.extra_weight = 0.0
  c.data.tfds_name = "faces300_w"    # tfds_faces: the prepared TFDS dataset under data.root
  c.data.num_landmarks = 68
  c.data.size = 128                  # paper: 128 x 128 crops
  c.data.box_scale = 1.3             # ours: crop side = 1.3 x the landmarks' box
  c.data.batch_size = 32             # images or clips per step, global
  c.data.clip_length = 1             # T: 1 for images, 10 for clips (paper)
  c.data.samples_per_image = 10      # paper: 10 augmented samples per image per epoch
  c.data.clips_per_video = 100       # paper: 100 random clips per training video
  c.data.augment = True              # paper: scale 0.9-1.1, +-15 deg, +-7 px, flip (images)
  # Ranges (data_pipelines.face_crops.Augmentation); the paper's, appearance changes off.
  c.data.augmentation = ml_collections.ConfigDict(dict(
      scale=(0.9, 1.1), rotation_deg=15.0, rotation_step_deg=0.0, translation_px_at_128=7.0,
      flip=True, colour=0.0, blur_prob=0.0, occluder_prob=0.0))
  c.data.identity_disjoint = False   # no identity twice in a batch (paper: video stage)
  # Share of the training images / videos held out (seeded) as a validation set, evaluated
  # every epoch (needed by optimizer.schedule='plateau'); 0: none.
  c.data.validation_fraction = 0.0
  # Clips (still_clips: half of them; videos: a mirrored copy of each) flipped left-right with
  # the landmark indices swapped.
  c.data.clip_flip = False
  c.data.skip_bad_samples = False
  c.data.occluder_prob = 0.5         # still_clips: share of clips crossed by a moving occluder
  c.data.workers = 2                 # Grain worker processes (0: decode in the main process)
  c.data.synthetic = ml_collections.ConfigDict(dict(
      num_identities=40, frames_per_identity=20, frames_per_video=60, frame_size=128,
      eval_identities=4, seed=0))

  c.model = ml_collections.ConfigDict()
  c.model.name = "rednet_v1"
  c.model.num_landmarks = c.data.get_ref("num_landmarks")
  c.model.width = 1.0                # VGG-16
  c.model.num_steps = 3              # K (paper: 3; 4 adds little)
  c.model.feedback_squares = (7, 5, 3)
  # Fully unrolled: a rolled scan trains 6-30x slower on XLA:CPU (docs/engineering_notes.md).
  c.model.scan_unroll = c.model.get_ref("num_steps")
  c.model.remat_steps = False        # True: recompute each step's activations in the backward
  c.model.bn_stats_per_step = True   # the authors' released code keeps them per step
  c.model.use_temporal = False
  c.model.temporal_residual = False  # paper: f_tRNN's output replaces C_pe; True adds it
  c.model.lstm_hidden = 256
  c.model.use_identity = False
  c.model.num_identities = -1        # -1: the number of identities in the training data
  c.model.use_shape_regression = True
  c.model.dropout_rate = 0.4
  c.model.bn_momentum = 0.99
  c.model.readout = "cluster_centroid"   # paper; 'probability_centroid': sub-pixel (models/readout.py)
  c.model.readout_window = 7
  c.model.dtype = "float32"

  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=0.01, momentum=0.9, decay_rate=0.8, decay_every_epochs=10,
      weight_decay=0.0))             # paper: SGD 0.9, lr 0.01 x0.8 every 10 epochs; no decay
  # 'step': x decay_rate every decay_every_epochs; 'plateau': x decay_rate when the validation
  # NME (data.validation_fraction of the training data) has not improved for
  # plateau_patience_epochs epochs (Belmonte et al.: x0.1 after 10).
  c.optimizer.schedule = "step"
  c.optimizer.plateau_patience_epochs = 10

  c.loss = ml_collections.ConfigDict()
  c.loss.target_square = 3           # ours: ground-truth label-map square side (px)
  # f_REG's Euclidean loss at weight 1 diverges at lr 0.01 (measured); 0.01 trains stably.
  c.loss.weights = ml_collections.ConfigDict(dict(response=1.0, shape=0.01, identity=1.0))

  # z_0 of frames after the first in training clips: the model's own previous prediction (the
  # paper's video stage; what tracking feeds) or the previous ground truth (teacher forcing).
  c.z0_in_training = "prediction"

  c.mesh = ml_collections.ConfigDict(dict(num_devices=-1, state_sharding="replicated"))

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 8
  c.eval.clips_per_video = 5
  c.eval.max_batches = 0             # 0: the whole held-out split
  c.eval.data = copy.deepcopy(c.data)   # used instead of data's held-out split if kind is set
  c.eval.data.kind = ""
  c.eval_every_steps = 0             # 0: only at the end of the stage

  c.log_every_steps = 50
  # (first, last): a profiler trace of those training steps in <stage>/profile (xprof); ()
  # none. Skip step 0 of a run: it compiles.
  c.profile_steps = ()
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 3
  c.outputs = ("ced_plot", "refinement_figure")
  return c


class ConfigError(ValueError):
  """A config value or override the user must fix; the message names the field as typed."""


# Fields that cannot change what a stage computes: a stage may be resumed (or a finished one
# reused) when only these differ from the config it was started with. The device count and the
# state sharding change the order of floating-point reductions only (the last bits).
# Fields added after runs were recorded, with the value that does what those runs did: a record
# without the field matches a config holding this value.
ADDED_FIELD_DEFAULTS = {"optimizer.schedule": "step", "optimizer.plateau_patience_epochs": 10,
                        "data.validation_fraction": 0.0, "data.clip_flip": False,
                        "eval.data.validation_fraction": 0.0, "eval.data.clip_flip": False,
                        "cpu_conv_gradients": False, "profile_steps": (),
                        "model.remat_steps": False, "cpu_ynn_fusions": True}

RESULT_NEUTRAL_FIELDS = (
    "name", "log_every_steps", "checkpoint_every_steps", "keep_checkpoints", "eval_every_steps",
    "outputs", "data.workers", "eval.data.workers", "mesh.num_devices", "mesh.state_sharding",
    "cpu_conv_gradients", "cpu_ynn_fusions", "profile_steps")


def load_config_file(path: str, preset: str) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location("_rednet_config_file", path)
  if spec is None or not os.path.isfile(path):
    raise ConfigError(f"--config={path}: no such config file")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset) if preset else module.get_config()


def field_paths(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every leaf field of `config` as a dotted path ('data.synthetic.seed')."""
  paths = []
  for key in config.keys():
    value = config[key]
    if isinstance(value, ml_collections.ConfigDict):
      paths += field_paths(value, f"{prefix}{key}.")
    else:
      paths.append(prefix + key)
  return paths


def _has_path(config: ml_collections.ConfigDict, path: str) -> bool:
  node = config
  for part in path.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return False
    node = node[part]
  return True


def _expand_override(config: ml_collections.ConfigDict, spec: str, path: str) -> list[str]:
  """The config paths an override of `path` sets. On a curriculum config a field of the stages
  (`model.num_steps`) applies to every stage that has it; `image.model.num_steps` to one."""
  if _has_path(config, path):
    return [path]
  stages = list(config.curriculum) if "curriculum" in config else []
  in_stages = [f"{stage}.{path}" for stage in stages if _has_path(config[stage], path)]
  if in_stages:
    return in_stages
  known = field_paths(config)
  if stages:
    known += sorted({p.split(".", 1)[1] for p in known if p.split(".", 1)[0] in stages})
  close = difflib.get_close_matches(path, known, n=3, cutoff=0.6)
  where = (f"neither a field of the curriculum nor of its stages {stages} (a per-stage field "
           f"is typed `--config.STAGE.{path}`, e.g. `--config.{stages[0]}.model.num_steps=3`; "
           "a stage field without the stage applies to every stage)") if stages else "not a field"
  raise ConfigError(f"--config.{path}: {where} of {spec}"
                    + (f"; did you mean {', '.join(close)}?" if close else ""))


def resolve_config_argument(argv: list[str], configs_dir: str = CONFIGS_DIR) -> list[str]:
  """Rewrites `--config=NAME[:ARG]` (a bare name, no `/` or `.py`) to the path of
  `configs_dir/NAME.py`, and checks every `--config.a.b=v` override against that config: on a
  curriculum a stage field without a stage (`--config.model.num_steps=3`) becomes one override
  per stage; a field the config does not have is an error with the closest names. Other
  arguments pass unchanged. Unknown config names are an error listing the known ones."""
  out, config, spec = [], None, ""
  for index, arg in enumerate(argv):
    for prefix in ("--config=", "-config="):
      if arg.startswith(prefix):
        spec = arg[len(prefix):]
        name, sep, preset = spec.partition(":")
        if name and os.sep not in name and "/" not in name and not name.endswith(".py"):
          path = os.path.join(configs_dir, name + ".py")
          if not os.path.exists(path):
            known = sorted(f[:-3] for f in os.listdir(configs_dir)
                           if f.endswith(".py") and not f.startswith("_"))
            raise ConfigError(f"--config={spec}: no config named {name!r} in {configs_dir}; "
                              f"known: {known}, or give a path to a .py file")
          arg = prefix + path + sep + preset
        try:
          config = load_config_file(arg[len(prefix):].partition(":")[0], preset)
        except ConfigError:
          raise
        except ValueError as e:   # an unknown preset
          raise ConfigError(f"--config={spec}: {e}") from e
    out.append(arg)
  if config is None:
    return out
  expanded = []
  for arg in out:
    flag = next((p for p in ("--config.", "-config.") if arg.startswith(p)), None)
    if flag is None:
      expanded.append(arg)
      continue
    path, eq, value = arg[len(flag):].partition("=")
    expanded += [f"{flag}{p}{eq}{value}" for p in _expand_override(config, spec, path)]
  return expanded


def load_config(spec: str, overrides: list[str] = (),
                configs_dir: str = CONFIGS_DIR) -> ml_collections.ConfigDict:
  """The config `experiments/run.py --config=SPEC --config.a=b ...` would get (for notebooks,
  sweeps and tests). `overrides` are 'a.b=v' strings."""
  argv = [sys.argv[0], f"--config={spec}"] + [f"--config.{o}" for o in overrides]
  argv = resolve_config_argument(argv, configs_dir)
  flag_values = flags.FlagValues()
  # config_flags finds the override flags in the argv it is given (default: sys.argv).
  config_flags.DEFINE_config_file("config", None, "config file", flag_values=flag_values,
                                  lock_config=True, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def stage_configs(config: ml_collections.ConfigDict) -> list[tuple[str, Any]]:
  """[(field prefix as the user types it, stage config)]: ('image.', ...) per stage of a
  curriculum, ('', config) for a single stage."""
  if "curriculum" in config:
    return [(f"{name}.", config[name]) for name in config.curriculum]
  return [("", config)]


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every stage's values before anything is built or compiled; raises ConfigError
  listing each bad field as the user would type it (`image.data.batch_size`)."""
  # Imported here: configs.py is imported by the configs themselves, before JAX is needed.
  import inspect  # pylint: disable=g-import-not-at-top
  from rednet_jax.training.input_pipeline import KINDS, VIDEO_KINDS  # pylint: disable=g-import-not-at-top
  from rednet_jax.models import MODELS  # pylint: disable=g-import-not-at-top
  from rednet_jax.evaluation.reports import STAGE_OUTPUTS  # pylint: disable=g-import-not-at-top
  problems = []
  if "curriculum" in config:
    missing = [n for n in config.curriculum if n not in config]
    if missing or not config.curriculum:
      problems.append(f"curriculum: {list(config.curriculum)} names no stage config {missing}")
  for prefix, c in ([] if problems else stage_configs(config)):
    def value_of(field, c=c):
      value = c
      for part in field.split("."):
        value = value[part]
      return value

    def need(ok, field, rule, prefix=prefix):
      if not ok:
        problems.append(f"{prefix}{field}={value_of(field)!r}: {rule}")

    def positive(*fields):
      for field in fields:
        value = value_of(field)
        need(isinstance(value, int) and value >= 1, field, "must be a positive integer")

    positive("data.batch_size", "data.size", "data.clip_length", "data.samples_per_image",
             "data.clips_per_video", "data.num_landmarks", "eval.batch_size", "eval.clips_per_video", "log_every_steps",
             "checkpoint_every_steps", "keep_checkpoints")
    need(c.total_steps >= 0, "total_steps", "must be >= 0 (0: train num_epochs)")
    if not c.total_steps:
      positive("num_epochs")
    need(c.eval_every_steps >= 0, "eval_every_steps", "must be >= 0 (0: only at the end)")
    need(c.eval.max_batches >= 0, "eval.max_batches", "must be >= 0 (0: all)")
    need(c.data.workers >= 0, "data.workers", "must be >= 0 (0: load in this process)")
    need(c.data.size % 32 == 0, "data.size", "must be a multiple of 32 (five 2x2 poolings)")
    need(c.data.box_scale > 0, "data.box_scale", "must be > 0")
    need(0 <= c.data.occluder_prob <= 1, "data.occluder_prob", "must be in [0, 1]")
    augmentation = c.data.augmentation
    need(0 < augmentation.scale[0] <= augmentation.scale[1], "data.augmentation.scale",
         "must be (low, high) with 0 < low <= high")
    for field in ("rotation_deg", "rotation_step_deg", "translation_px_at_128"):
      need(augmentation[field] >= 0, f"data.augmentation.{field}", "must be >= 0")
    need(0 <= augmentation.colour < 1, "data.augmentation.colour", "must be in [0, 1)")
    for field in ("blur_prob", "occluder_prob"):
      need(0 <= augmentation[field] <= 1, f"data.augmentation.{field}", "must be in [0, 1]")
    need(0 <= c.data.extra_weight < 1, "data.extra_weight", "must be in [0, 1)")
    need(bool(c.data.extra_root) == (c.data.extra_weight > 0), "data.extra_weight",
         "set data.extra_root and data.extra_weight > 0 together, or neither")
    need(not c.data.extra_root or c.data.kind == "image_folder", "data.kind",
         "a second training source (data.extra_root) needs 'image_folder'")
    need(c.data.kind in KINDS, "data.kind", f"must be one of {list(KINDS)}")
    need(not c.eval.data.kind or c.eval.data.kind in KINDS, "eval.data.kind",
         f"must be '' (the training data's held-out split) or one of {list(KINDS)}")
    need(c.model.name in MODELS, "model.name", f"must be one of {sorted(MODELS)}")
    if c.model.name in MODELS:
      system = MODELS[c.model.name]
      fields = set(system.__dataclass_fields__) - {"parent", "name"}
      unknown = sorted(set(c.model) - fields - {"name"})
      need(not unknown, "model", f"{c.model.name} has no field(s) {unknown}; its fields: "
           f"{sorted(fields)}")
      loss_fields = {n for n, p in inspect.signature(system.loss).parameters.items()
                     if p.kind == p.KEYWORD_ONLY}
      unknown = sorted(set(c.loss) - loss_fields)
      need(not unknown, "loss", f"{c.model.name}'s loss has no field(s) {unknown}; its fields: "
           f"{sorted(loss_fields)}")
      for field, rule in system.config_problems(c.model, c.loss):
        need(False, field, rule)
    if "dropout_rate" in c.model:
      need(0 <= c.model.dropout_rate < 1, "model.dropout_rate", "must be in [0, 1)")
    if "bn_momentum" in c.model:
      need(0 < c.model.bn_momentum < 1, "model.bn_momentum", "must be in (0, 1)")
    if "dtype" in c.model:
      need(c.model.dtype in ("float32", "bfloat16", "float16"), "model.dtype",
           "must be 'float32', 'bfloat16' or 'float16'")
    if "num_identities" in c.model:
      need(c.model.num_identities == -1 or c.model.num_identities >= 1, "model.num_identities",
           "must be -1 (as many as the training data has) or positive")
    need(c.optimizer.name in ("sgd", "adam"), "optimizer.name", "must be 'sgd' (paper) or 'adam'")
    need(c.optimizer.learning_rate >= 0, "optimizer.learning_rate", "must be >= 0")
    need(0 <= c.optimizer.momentum < 1, "optimizer.momentum", "must be in [0, 1)")
    need(0 < c.optimizer.decay_rate <= 1, "optimizer.decay_rate", "must be in (0, 1]")
    need(c.optimizer.decay_every_epochs > 0, "optimizer.decay_every_epochs", "must be > 0")
    need(c.optimizer.weight_decay >= 0, "optimizer.weight_decay", "must be >= 0")
    need(c.optimizer.schedule in ("step", "plateau"), "optimizer.schedule",
         "must be 'step' or 'plateau'")
    need(c.optimizer.schedule != "plateau" or c.data.validation_fraction > 0,
         "optimizer.schedule", "'plateau' needs a validation set: data.validation_fraction > 0")
    need(isinstance(c.optimizer.plateau_patience_epochs, int)
         and c.optimizer.plateau_patience_epochs >= 1, "optimizer.plateau_patience_epochs",
         "must be a positive integer")
    need(0 <= c.data.validation_fraction < 1, "data.validation_fraction", "must be in [0, 1)")
    clip_kinds = ("still_clips",) + VIDEO_KINDS
    need(not c.data.clip_flip or c.data.kind in clip_kinds, "data.clip_flip",
         f"mirrors clips: data.kind must be one of {list(clip_kinds)}")
    for key in (c.loss.weights.keys() if "weights" in c.loss else ()):
      need(c.loss.weights[key] >= 0, f"loss.weights.{key}", "must be >= 0")
    need(c.z0_in_training in ("prediction", "ground_truth"), "z0_in_training",
         "must be 'prediction' (paper) or 'ground_truth' (teacher forcing)")
    profile = tuple(c.get("profile_steps", ()))
    need(not profile or (len(profile) == 2 and all(isinstance(v, int) for v in profile)
                         and 0 <= profile[0] <= profile[1]), "profile_steps",
         "must be () or (first, last) with 0 <= first <= last")
    for field in ("cpu_conv_gradients", "cpu_ynn_fusions"):
      need(isinstance(c.get(field, False), bool), field, "must be True or False")
    need(c.mesh.state_sharding in ("replicated", "fsdp"), "mesh.state_sharding",
         "must be 'replicated' or 'fsdp'")
    need(c.mesh.num_devices == -1 or c.mesh.num_devices >= 1, "mesh.num_devices",
         "must be -1 (all) or positive")
    unknown = sorted(set(c.outputs) - set(STAGE_OUTPUTS))
    need(not unknown, "outputs", f"unknown {unknown}; known: {list(STAGE_OUTPUTS)}")
  if problems:
    raise ConfigError("bad config value" + ("s" if len(problems) > 1 else "") + ":\n  "
                      + "\n  ".join(problems))


def differences(recorded: dict, current: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
  """[(field as typed, recorded value, current value)] for the fields that differ between two
  stage configs as dicts (`to_dict()` / JSON), leaving out RESULT_NEUTRAL_FIELDS."""
  def flat(d, p=""):
    out = {}
    for k, v in d.items():
      if isinstance(v, dict):
        out.update(flat(v, f"{p}{k}."))
      else:
        out[p + k] = list(v) if isinstance(v, tuple) else v
    return out
  a, b = flat(recorded), flat(json_roundtrip(current))
  def value(d, k):
    return d.get(k, ADDED_FIELD_DEFAULTS.get(k, "<absent>"))
  return [(prefix + k, value(a, k), value(b, k)) for k in sorted(set(a) | set(b))
          if k not in RESULT_NEUTRAL_FIELDS and value(a, k) != value(b, k)]


def json_roundtrip(config) -> dict:
  """A stage config as the JSON dict recorded in a stage folder (tuples become lists)."""
  if isinstance(config, ml_collections.ConfigDict):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(config))


def rednet_v2_stage(c: ml_collections.ConfigDict, encoder: str, cpu: bool
                    ) -> ml_collections.ConfigDict:
  """Turns a RED-Net v1 stage config (the curriculum's data, schedule and modules) into the
  same stage of RED-Net v2 (IJCV 2018): its model and loss fields with the paper's values,
  `encoder` 'vgg16' or 'resnet' (ResNet-152). `cpu`: a model a 2-core CPU trains in hours
  (width 1/8, ResNet-50, 128-px input, targets scaled to the 64-px maps, and the paper's 128
  decoder channels into the 1x1 heads: at 16 = 128/8 the 68 linear regression maps cannot be
  sharp: the best 16-dimensional subspace of 300-W's target maps reads out at 9.4 % NME,
  benchmarks/regression_head_rank.py)."""
  stage_modules = {k: c.model[k] for k in ("use_temporal", "use_identity", "num_identities")}
  c.model = ml_collections.ConfigDict(dict(
      name="rednet_v2", num_landmarks=68, encoder=encoder, encoder_depth=152, width=1.0,
      head_features=0, steps=("detection", "regression"), share_weights=True, scan_unroll=2,
      remat_steps=False,
      feedback="image", feedback_gradient=True, disk_radius=5.0, gaussian_peak=1.0,
      temporal_residual=False, lstm_hidden=256, identity_embedding=256, dropout_rate=0.6,
      bn_momentum=0.9, input_normalisation="imagenet", readout="peak_centroid",
      readout_window=5, search_window=0, dtype="float32", **stage_modules))
  # Paper: radius 5 px, sigma 5 px on 128-px maps, foreground x15; lambda, gamma such that
  # det : reg : cls is about 1 : 10 : 1. lambda = 100: measured with these loss settings on
  # 300-W (rednet_v2_faces300w, step 100): l_det 0.71, l_reg 0.056, so 1 : 7.9. The released
  # code's loss (peak 10, ratio weighting) needs lambda ~1 for the same ratio.
  c.loss = ml_collections.ConfigDict(dict(
      disk_radius=5.0, gaussian_sigma=5.0, gaussian_peak=1.0, foreground_weight=15.0,
      foreground_weight_from_ratio=False,
      weights=ml_collections.ConfigDict(dict(detection=1.0, regression=100.0, identity=1.0))))
  c.data.size = 256                      # paper: 256 x 256 input, 128 x 128 response maps
  if cpu:
    c.model.width, c.model.encoder_depth, c.data.size = 0.125, 50, 128
    c.model.head_features = 128
    c.model.disk_radius = c.loss.disk_radius = 2.5     # half the paper's: 64-px maps
    c.loss.gaussian_sigma = 2.5
  return c


RED_NET_V2_PRESETS = {"": ("resnet", False), "resnet": ("resnet", False), "vgg": ("vgg16", False),
                      "resnet_cpu": ("resnet", True), "vgg_cpu": ("vgg16", True)}


def rednet_v2_from_v1_config(v1_file: str, arg: str) -> ml_collections.ConfigDict:
  """The RED-Net v2 version (`rednet_v2_stage`) of the v1 stage config file `v1_file` under
  CONFIGS_DIR; `arg` is a preset of RED_NET_V2_PRESETS (the _cpu ones take v1's 'cpu')."""
  if arg not in RED_NET_V2_PRESETS:
    raise ValueError(f"unknown preset {arg!r}; known: {sorted(p for p in RED_NET_V2_PRESETS if p)}")
  encoder, cpu = RED_NET_V2_PRESETS[arg]
  v1 = load_config_file(os.path.join(CONFIGS_DIR, v1_file), "cpu" if cpu else "")
  return rednet_v2_stage(v1, encoder, cpu)
