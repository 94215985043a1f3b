"""Config plumbing: the fields every stage config has (with the paper's values), and the
`--config=NAME[:ARG]` resolution of `experiments/run.py`.

Configs are `ml_collections.ConfigDict`s made by `get_config(arg)` in one file per stage under
`experiments/configs/`. `--config=video_stage` means `experiments/configs/video_stage.py`; a path
works too; `:ARG` selects a preset of that file; `--config.a.b=v` overrides a field, and a field
the config does not have is an error.
"""

from __future__ import annotations

import copy
import os
import sys

import ml_collections
from absl import flags
from ml_collections import config_flags

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "experiments", "configs")


def base_stage(name: str) -> ml_collections.ConfigDict:
  """Every field a stage has, set to the paper's values (RED-Net v1, ECCV 2016) where it gives
  them; comments mark our choices where it is silent."""
  c = ml_collections.ConfigDict()
  c.name = name                      # folder under the workdir
  c.seed = 0
  c.num_epochs = 1
  c.total_steps = 0                  # > 0: stop after this many steps instead of num_epochs
  c.init_from = ""                   # previous stage: a stage name in this workdir, or a path
  c.init_keep_fresh = ()             # regexes of leaves not taken from init_from
  c.vgg16_weights = ""               # torch .pt or Keras .h5 VGG-16 (paper: ImageNet init)

  c.data = ml_collections.ConfigDict()
  c.data.kind = "image_folder"       # see rednet_jax/input_pipeline.py
  c.data.root = ""
  c.data.train_split = "train"       # manifest split ("" : every annotated image under root)
  c.data.eval_split = "val"
  c.data.eval_root = ""              # image folders: held-out images from another folder
  c.data.num_landmarks = 68
  c.data.size = 128                  # paper: 128 x 128 crops
  c.data.box_scale = 1.3             # ours: crop side = 1.3 x the landmarks' box
  c.data.batch_size = 32             # images or clips per step, global
  c.data.clip_length = 1             # T: 1 for images, 10 for clips (paper)
  c.data.samples_per_image = 10      # paper: 10 augmented samples per image per epoch
  c.data.clips_per_video = 100       # paper: 100 random clips per training video
  c.data.augment = True              # paper: scale 0.9-1.1, +-15 deg, +-7 px, flip (images)
  c.data.identity_disjoint = False   # no identity twice in a batch (paper: video stage)
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
  # Fully unrolled: NOTES.md, a rolled scan trains 6-30x slower on XLA:CPU.
  c.model.scan_unroll = c.model.get_ref("num_steps")
  c.model.bn_stats_per_step = True   # the authors' released code keeps them per step
  c.model.use_temporal = False
  c.model.temporal_residual = False  # paper: f_tRNN's output replaces C_pe; True adds it
  c.model.lstm_hidden = 256
  c.model.use_identity = False
  c.model.num_identities = -1        # -1: the number of identities in the training data
  c.model.use_shape_regression = True
  c.model.dropout_rate = 0.4
  c.model.bn_momentum = 0.99
  c.model.dtype = "float32"

  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=0.01, momentum=0.9, decay_rate=0.8, decay_every_epochs=10,
      weight_decay=0.0))             # paper: SGD 0.9, lr 0.01 x0.8 every 10 epochs; no decay

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
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 3
  c.outputs = ("ced_plot", "refinement_figure")
  return c


def resolve_config_argument(argv: list[str], configs_dir: str = CONFIGS_DIR) -> list[str]:
  """Rewrites `--config=NAME[:ARG]` (a bare name, no `/` or `.py`) to the path of
  `configs_dir/NAME.py`; other arguments pass unchanged. Unknown names are an error listing
  the known ones."""
  out = []
  for arg in argv:
    for prefix in ("--config=", "-config="):
      if arg.startswith(prefix):
        spec = arg[len(prefix):]
        name, sep, preset = spec.partition(":")
        if name and os.sep not in name and "/" not in name and not name.endswith(".py"):
          path = os.path.join(configs_dir, name + ".py")
          if not os.path.exists(path):
            known = sorted(f[:-3] for f in os.listdir(configs_dir)
                           if f.endswith(".py") and not f.startswith("_"))
            raise ValueError(f"--config={spec}: no config named {name!r} in {configs_dir}; "
                             f"known: {known}, or give a path to a .py file")
          arg = prefix + path + sep + preset
    out.append(arg)
  return out


def load_config(spec: str, overrides: list[str] = (),
                configs_dir: str = CONFIGS_DIR) -> ml_collections.ConfigDict:
  """The config `experiments/run.py --config=SPEC --config.a=b ...` would get (for notebooks,
  sweeps and tests). `overrides` are 'a.b=v' strings."""
  argv = resolve_config_argument([sys.argv[0], f"--config={spec}"], configs_dir)
  argv += [f"--config.{o}" for o in overrides]
  flag_values = flags.FlagValues()
  # config_flags finds the override flags in the argv it is given (default: sys.argv).
  config_flags.DEFINE_config_file("config", None, "config file", flag_values=flag_values,
                                  lock_config=True, sys_argv=argv)
  flag_values(argv)
  return flag_values.config
