r"""Real faces, human labels, CPU budget: the image stage on 300-W's LFPW + Helen training faces,
then a video stage on clips made from the same stills. Aimed at tracking real video (the FGNET
Talking Face protocol of `experiments/evaluate.py --kind=talking_face`) on two CPU cores.

Data: the 300-W layout (`lfpw/{trainset,testset}`, `helen/{trainset,testset}`, a `.pts` beside
each image, `manifest.csv` with `split` train / test): train = LFPW train + Helen train (1,675
faces), test = LFPW test + Helen test, 300-W's "common" subset (554 faces). The test split is
only reported during training (nothing is selected on it). Point the config at the folder with
`--config.data_root`.

Command:
  python experiments/run.py --config=faces300w --workdir=/tmp/faces300w \
    --config.data_root=/path/to/300w
Hardware: 2 CPU cores.
Expected time: image stage 60-72 min (0.39-0.48 steps/s), video stage 19 min (0.13-0.15
steps/s), about 95 min wall with evaluations. Expected result: 300-W common NME io 5.5 % after
the image stage, 5.1 % for the video stage on clips made from the common stills (both at the
trained 7-px read-out window). The shipped model (`rednet_jax/assets/faces300w_cpu`, its
MODEL_CARD.md has Talking Face) is the image stage exported with `export.py --readout_window=31`,
a window chosen after training on ytf68 val: 4.9 % on 300-W common.

Not the paper's settings (those are image_stage.py / video_stage.py): a quarter-width VGG-16 at
96 px with K = 2, trained from scratch (no ImageNet weights here), Adam annealed per epoch,
5-px targets, BN momentum 0.9; wider augmentation than the paper's (scale 0.8-1.2, +-30 deg,
colour, blur, occluders) for in-the-wild faces; f_tRNN added to C_pe (model.temporal_residual).
"""

import ml_collections

from rednet_jax.training.configs import base_stage


def _stage(name: str, root: ml_collections.FieldReference) -> ml_collections.ConfigDict:
  c = base_stage(name)
  c.data.root = root
  c.data.train_split, c.data.eval_split = "train", "test"
  c.model.width, c.model.num_steps, c.model.lstm_hidden = 0.25, 2, 128
  c.model.bn_momentum = 0.9
  c.model.readout = "probability_centroid"
  c.data.size = 96
  c.loss.target_square = 5
  c.optimizer.update(name="adam", momentum=0.9)
  c.data.augmentation.update(scale=(0.8, 1.2), rotation_deg=30.0, translation_px_at_128=10.0,
                             colour=0.3, blur_prob=0.3, occluder_prob=0.3)
  return c


def get_config(arg: str = ""):
  if arg:
    raise ValueError(f"faces300w: unknown preset {arg!r}; it has none")
  c = ml_collections.ConfigDict()
  root = ml_collections.FieldReference("~/data/300w")
  c.data_root = root
  c.curriculum = ("image", "video")

  c.image = _stage("image", root)
  c.image.data.kind = "image_folder"
  c.image.data.batch_size = 16
  c.image.data.samples_per_image = 4           # augmented samples per face per epoch
  c.image.num_epochs = 4
  c.image.optimizer.update(learning_rate=0.002, decay_every_epochs=1, decay_rate=0.6)
  c.image.eval_every_steps = 418               # once per epoch (418 steps)
  c.image.checkpoint_every_steps = 209

  c.video = _stage("video", root)
  c.video.init_from = "image"
  c.video.data.kind = "still_clips"
  c.video.data.clip_length = 10
  c.video.data.batch_size = 4
  c.video.data.samples_per_image = 1           # clips per still per epoch
  c.video.total_steps = 150
  c.video.optimizer.update(learning_rate=3e-4, decay_every_epochs=1000)
  c.video.model.use_temporal = True
  c.video.model.temporal_residual = True
  c.video.eval.batch_size = 4
  c.video.checkpoint_every_steps = 100
  c.video.outputs = ("ced_plot", "refinement_figure")
  return c
