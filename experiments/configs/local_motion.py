r"""The local-motion models of Belmonte et al. (WACV 2019): 2D, 3D, 2DRNN, 3DRNN, 2DFCRNN and
3DFCRNN (`rednet_jax/models/local_motion.py`), one stage each, trained from scratch.

Presets: VARIANT (the paper's setting) and VARIANT_cpu (a 2-core CPU budget on real faces),
VARIANT one of 2d, 3d, 2drnn, 3drnn, 2dfcrnn, 3dfcrnn.

The paper's setting (VARIANT): 300-VW (data.kind '300vw', the challenge's split: 50 training
videos, the 64 of categories 1-3 held out; `evaluate.py --kind=300vw` scores each category), clips of
3 frames (the 2D model: single frames), 20 % of the training videos for validation, 64 x 64
crops Z-score normalised, Xavier-uniform initialisation, Adam lr 1e-4 x0.1 when the validation
NME has not improved for 10 epochs, 100 epochs, batch 8 (2D convolutions) / 4 (3D), L2 loss,
flip and time-reversal augmentation (300-VW clips are sampled in both directions).
  python experiments/run.py --config=local_motion:3drnn --workdir=$HOME/runs/lm_3drnn \
    --config.data.root=/path/to/300vw
Hardware: one GPU. Expected time and result: not measured (no accelerator lent yet; paper
Table 6, 300-VW categories 1/2/3 mean error: 3DRNN 5.34 / 5.01 / 8.14, 3DFCRNN 5.73 / 4.83 /
8.70).

The CPU budget (VARIANT_cpu, what `experiments/sweeps/local_motion.py` trains), two stages:
- `train`: 300-W's LFPW + Helen training faces (1,675; 20 % for validation) made into clips of
  3 frames by a smooth random camera path (`data.kind='still_clips'`, no occluders, half the
  clips mirrored), the paper's models, optimiser, batch and schedule except a zero-initialised
  output layer (`model.zero_init_output`, see below), and as many epochs as about 45 minutes on
  two cores give each model (capped at the paper's 100): 45 min x 80 % (data loading,
  validation) x the train samples/s of `benchmarks/local_motion_table7.py` (2D 77, 3D 11.5,
  2DRNN 21, 3DRNN 10.7, 2DFCRNN 1.9, 3DFCRNN 1.9) / 1,340 faces. Held-out evaluation: 300-W
  common (554 stills, a window of the same frame three times), as the RED-Net rows of the
  README are.
- `sequences`: from `train`, one pass over ytf68's real facial motion (`data.kind=
  'image_sequences'`: 3 frames of each of 883 YouTube videos of 267 people, 20 % of the videos
  for validation, each clip forward, reversed and mirrored), Adam at 1e-5 for all six; held
  out: ytf68 val (100 videos of 30 other people). The still clips move only the camera; this
  stage is where early temporal connectivity can meet faces that move. What a model takes
  from its window: the same weights evaluated with a static one (`evaluate.py
  --reset_temporal_state`).
  python experiments/run.py --config=local_motion:3drnn_cpu --workdir=$HOME/runs/lm_3drnn \
    --config.data_root=/path/to/300w --config.sequences_root=/path/to/ytf68
Hardware: 2 CPU cores. Expected time: about 45 minutes each for `train` (2D: 100 epochs in
about 35); `sequences` 1 (2D) to 33 minutes (FCRNNs).
Not used: a second stage on the synthetic talking-face videos (blinks, speech, head turns: the
local motion clips of stills cannot show), from this one with the same recipe, 30 epochs for
2D: 300-W common went from 5.67 to 14.80 % and Talking Face from 4.69 to 70.6 % (lost
track): the rendered faces are too far from real ones to fine-tune on alone.
Expected result: see the README's local-motion table.
"""

import ml_collections

from rednet_jax.models.local_motion import VARIANTS
from rednet_jax.training.configs import base_stage

# Epochs in the CPU budget (about 45 min on 2 cores, data loading included; at most 100).
CPU_EPOCHS = {"2d": 100, "3d": 18, "2drnn": 34, "3drnn": 17, "2dfcrnn": 3, "3dfcrnn": 3}
# Fine-tuning on real sequences: a tenth of the paper's starting rate, the same for all six
# (their first stages end at 1e-6 (2D) to 1e-4 (3D, FCRNN)).
SEQUENCES_LEARNING_RATE = 1e-5


def _stage(name: str, variant: str) -> ml_collections.ConfigDict:
  """One stage with the paper's model and recipe (the data is the caller's)."""
  convolution, recurrent, output = VARIANTS[variant]
  c = base_stage(name)
  c.model = ml_collections.ConfigDict(dict(
      name="local_motion", num_landmarks=c.data.get_ref("num_landmarks"),
      input_size=c.data.get_ref("size"), convolution=convolution, recurrent=recurrent,
      output=output, window=3, width=1.0, filters=(32, 64, 128, 256, 512), dense_units=1024,
      heatmap_features=256, head_features=512, dropout_rate=0.2, recurrent_dropout=0.2,
      zero_init_output=False, readout="peak", readout_window=3, dtype="float32"))
  c.loss = ml_collections.ConfigDict(dict(gaussian_sigma=3.0))
  c.data.size = 64
  temporal = convolution == "3d" or recurrent
  c.data.clip_length = 3 if temporal else 1
  c.data.batch_size = 4 if convolution == "3d" else 8
  c.data.validation_fraction = 0.2
  c.optimizer.update(name="adam", learning_rate=1e-4, momentum=0.9, decay_rate=0.1,
                     schedule="plateau", plateau_patience_epochs=10)
  c.z0_in_training = "ground_truth"   # these models take no z_0; skips the tracking pass
  c.num_epochs = 100
  c.outputs = ("ced_plot",)
  return c


def get_config(arg: str = "3drnn"):
  variant, _, cpu = arg.partition("_")
  if variant not in VARIANTS or cpu not in ("", "cpu"):
    raise ValueError(f"local_motion: unknown preset {arg!r}; known: "
                     f"{sorted(VARIANTS) + sorted(v + '_cpu' for v in VARIANTS)}")
  if not cpu:
    c = _stage("train", variant)
    c.data.kind = "300vw"
    c.data.root = "~/data/300vw"
    c.data.train_split, c.data.eval_split = "challenge_train", "challenge_test"
    c.data.clips_per_video = 100
    c.data.clip_flip = True             # each clip also mirrored (and reversed: 300-VW clips)
    c.eval.batch_size = 8
    return c
  root = ml_collections.FieldReference("~/data/300w")
  sequences_root = ml_collections.FieldReference("~/data/ytf68")
  train = _stage("train", variant)
  train.data_root = root
  train.data.kind = "still_clips"
  train.data.root = root
  train.data.train_split, train.data.eval_split = "train", "test"
  train.data.samples_per_image = 1    # an epoch: every training face once
  train.data.occluder_prob = 0.0      # the paper adds no occluders
  train.data.clip_flip = True
  # The paper's Xavier-initialised output layer starts O(1) crop sizes off; Adam at 1e-4 took
  # >1,000 steps to undo it (2D, 300-W validation NME io 50 % after 6 epochs; with this 17 %
  # after 3), a large share of a CPU budget (the paper: ~10^6 steps). Same for all six.
  train.model.zero_init_output = True
  train.num_epochs = CPU_EPOCHS[variant]
  train.eval.batch_size = 16
  train.eval.data.update(kind="image_folder", root=root, eval_split="test", clip_length=1,
                         size=64)
  # Real facial motion: ytf68's 3-frame YouTube sequences, one pass for every model.
  sequences = _stage("sequences", variant)
  sequences.init_from = "train"
  sequences.data.update(kind="image_sequences", root=sequences_root, train_split="train",
                        eval_split="val", clips_per_video=1, clip_flip=True)
  sequences.model.zero_init_output = True
  sequences.optimizer.learning_rate = SEQUENCES_LEARNING_RATE
  sequences.num_epochs = 1
  sequences.eval.batch_size = 16
  sequences.eval.clips_per_video = 1  # a 3-frame sequence holds one 3-frame window
  return ml_collections.ConfigDict(dict(curriculum=("train", "sequences"), train=train,
                                        sequences=sequences, data_root=root,
                                        sequences_root=sequences_root))
