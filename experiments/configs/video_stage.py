r"""Stage 3 of the RED-Net curriculum: the video stage (adds f_tRNN), 68 landmarks on 300-VW.

Paper (ECCV 2016, sec. 5): starts from the identity stage, adds the temporal LSTM (256 hidden)
on C_pe, fine-tunes on 300-VW clips of T = 10 frames, 100 random clips per training video, each
also time-reversed, no augmentation, 5 clips per batch with no identity repeated, 50 epochs; the
identity loss stays on (the identities are now the 300-VW videos, so the classifier's output
layer starts fresh). Split: RED-Net's 90 training / 24 test videos (`data_pipelines/splits/`).
z_0 is the previous frame's ground truth in training (the mean shape for each clip's first
frame); held-out clips are run frame by frame on the model's own previous prediction.

Command (after identity_stage, same workdir):
  python experiments/run.py --config=video_stage --workdir=$HOME/runs/rednet68 \
    --config.data.root=$HOME/data/300VW_Dataset_2015_12_14
Hardware: one GPU or TPU host (8 accelerators: raise data.batch_size to a multiple of 8).
Expected time: not measured yet (no accelerator lent so far); 90 videos x 200 clips / 5 =
3,600 steps per epoch, 180,000 steps.
Expected result (paper Table 3, 300-VW full test set): NME 5.25 % with f_tRNN (5.83 % without),
failure rate 2.82 % (6.43 % without) -- a target for a faithful run, not reproduced here yet.

Presets: `cpu` (width 0.25, 64 px, K = 2, 20 clips per video, 5 epochs).
"""

from rednet_jax.training.configs import base_stage


def get_config(arg: str = ""):
  c = base_stage("video")
  c.num_epochs = 50
  c.init_from = "identity"
  c.init_keep_fresh = (r"params/identity/logits/.*",)
  c.data.kind = "300vw"
  c.data.root = "~/data/300VW_Dataset_2015_12_14"
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.clip_length = 10
  c.data.batch_size = 5
  c.data.clips_per_video = 100
  c.data.augment = False
  c.data.identity_disjoint = True
  c.model.use_identity = True
  c.model.use_temporal = True
  c.eval.clips_per_video = 10
  c.log_every_steps = 50
  c.checkpoint_every_steps = 1000
  c.eval_every_steps = 10000
  c.outputs = ("ced_plot", "refinement_figure", "overlay_video")
  if arg == "cpu":
    c.model.width, c.data.size, c.model.num_steps = 0.25, 64, 2
    c.data.clips_per_video, c.num_epochs = 20, 5
  elif arg:
    raise ValueError(f"video_stage: unknown preset {arg!r}; known: 'cpu'")
  return c
