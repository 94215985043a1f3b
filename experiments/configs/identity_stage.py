r"""Stage 2 of the RED-Net curriculum: the identity stage (adds f_CLS), 68 landmarks.

Paper (ECCV 2016, sec. 5): starts from the image stage, adds the identity classifier on C_id
(4x4 average pool -> 256-d, dropout 0.4, softmax over the training identities) and fine-tunes on
LFW's identity labels for 20 epochs. LFW has no 68-point annotation, so for the 68-point
curriculum this config reads an image folder whose `manifest.csv` has an identity column (the
ytf68 layout: YouTube-Faces frames with 68 points), `train` split for training and the
identity-disjoint `val` split held out; no identity twice in a batch.

Command (after image_stage, same workdir):
  python experiments/run.py --config=identity_stage --workdir=$HOME/runs/rednet68 \
    --config.data.root=$HOME/data/ytf68
Hardware: one GPU or TPU host; batch 32 crops of 128 px.
Expected time: not measured yet (no accelerator lent so far).
Expected result: no paper number for this stage alone.

Presets: `cpu` as in image_stage (width 0.25, 64 px, K = 2, batch 16).
"""

from rednet_jax.training.configs import base_stage


def get_config(arg: str = ""):
  c = base_stage("identity")
  c.num_epochs = 20
  c.init_from = "image"
  c.data.kind = "image_folder"
  c.data.root = "~/data/ytf68"
  c.data.batch_size = 32
  c.data.identity_disjoint = True
  c.model.use_identity = True
  c.log_every_steps = 50
  c.checkpoint_every_steps = 1000
  c.eval_every_steps = 5000
  if arg == "cpu":
    c.model.width, c.data.size, c.model.num_steps = 0.25, 64, 2
    c.data.batch_size, c.num_epochs = 16, 5
  elif arg:
    raise ValueError(f"identity_stage: unknown preset {arg!r}; known: 'cpu'")
  return c
