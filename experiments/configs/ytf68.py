r"""Real faces at CPU size: the image stage on the ytf68 stills, then the video stage on clips made
from the same stills. This is how the first shipped checkpoint (`ytf68_cpu`, replaced by
`rednet_jax/assets/faces300w_cpu`; in the git history with its model card) was trained.

Data: the ytf68 layout (`images/<identity>/<identity>_<V><F>.jpg` with an iBUG `.pts` beside
each image, `manifest.csv` with an identity-disjoint `split` column: 267 people `train`, 30
people `val`). Point the config at it with `--config.data_root`.

Command:
  python experiments/run.py --config=ytf68 --workdir=/tmp/ytf68 --config.data_root=/path/to/ytf68
Hardware: 2 CPU cores.
Expected time: image stage 35 min, video stage 16 min, 52 min wall in all (measured at
1.3-1.6 / 0.41 steps/s; a slower 2-core machine at 0.82 steps/s took 63 + 27 min; see the
model card).
Expected result: `val` (30 unseen people, 300 frames) nme_io 6.1 % after the image stage (the
target is below 7 %; 6.7 % after epoch 2), 5.7 % for the exported video stage on the same
stills (6.0 % on 300 val clips tracked frame by frame); `<workdir>/summary.md` has both stages'
numbers.

Not the paper's settings (the paper's are in image_stage.py / video_stage.py): a quarter-width
VGG-16 at 64 px with K = 2 from scratch (no ImageNet weights here), Adam annealed per epoch,
5-px targets, BN momentum 0.9 (same reasons as the quickstart's, measured there); the video
stage's f_tRNN is added to C_pe (model.temporal_residual) rather than replacing it.
"""

import ml_collections

from rednet_jax.training.configs import base_stage


def _stage(name: str, root: ml_collections.FieldReference) -> ml_collections.ConfigDict:
  c = base_stage(name)
  c.data.root = root
  c.data.eval_root = ""
  c.data.train_split, c.data.eval_split = "train", "val"
  c.model.width, c.model.num_steps, c.model.lstm_hidden = 0.25, 2, 128
  c.model.bn_momentum = 0.9
  c.data.size = 64
  c.loss.target_square = 5
  c.optimizer.update(name="adam", momentum=0.9)
  return c


def get_config(arg: str = ""):
  if arg:
    raise ValueError(f"ytf68: unknown preset {arg!r}; it has none")
  c = ml_collections.ConfigDict()
  root = ml_collections.FieldReference("~/data/ytf68")
  c.data_root = root
  c.curriculum = ("image", "video")

  c.image = _stage("image", root)
  c.image.data.kind = "image_folder"
  c.image.data.batch_size = 16
  c.image.data.samples_per_image = 3           # augmented samples per image per epoch
  c.image.num_epochs = 6
  c.image.optimizer.update(learning_rate=0.002, decay_every_epochs=1, decay_rate=0.6)
  c.image.eval_every_steps = 496               # once per epoch (496 steps)
  c.image.checkpoint_every_steps = 248

  c.video = _stage("video", root)
  c.video.init_from = "image"
  c.video.data.kind = "still_clips"
  c.video.data.clip_length = 10
  c.video.data.batch_size = 4
  c.video.data.samples_per_image = 1           # clips per still per epoch
  c.video.total_steps = 400
  c.video.optimizer.update(learning_rate=3e-4, decay_every_epochs=1000)
  c.video.model.use_temporal = True
  c.video.model.temporal_residual = True
  c.video.eval.batch_size = 4
  c.video.checkpoint_every_steps = 100
  c.video.outputs = ("ced_plot", "refinement_figure", "overlay_video")
  return c
