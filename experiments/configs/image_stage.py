r"""Stage 1 of the RED-Net curriculum: the image stage (no f_CLS, no f_tRNN), 68 landmarks.

Paper (ECCV 2016, sec. 5): SGD momentum 0.9, lr 0.01 x0.8 every 10 epochs, 30 epochs, 10
augmented samples per image, VGG-16 initialisation, K = 3. The paper trains its 7-point models
on AFLW + Helen + LFPW; for the 68-point curriculum that ends on 300-VW this config reads a
300-W-style folder (Helen, LFPW and AFW training sets: 3,148 images, `.pts` beside each image)
and holds out the 300-W test folders.

Command (accelerators; GPU or TPU, one host or many):
  python experiments/run.py --config=image_stage --workdir=$HOME/runs/rednet68 \
    --config.data.root=$HOME/data/300w/train --config.data.eval_root=$HOME/data/300w/test \
    --config.pretrained_weights=$HOME/weights/vgg16.pt
Hardware: one GPU or TPU host; batch 32 crops of 128 px. 983 steps/epoch x 30 epochs.
Expected time: not measured yet (no accelerator has been lent to this project; on this 2-core
CPU a width-1.0 K=3 step on 10 frames takes 21.5 s, see README's benchmark).
Expected result: no paper number for this stage alone (the paper reports the full curriculum).

Presets (`--config=image_stage:PRESET`):
  cpu   width 0.25, 64 px, K = 2, batch 16, 10 epochs: a model a 2-core CPU trains in hours.
"""

from rednet_jax.training.configs import base_stage


def get_config(arg: str = ""):
  c = base_stage("image")
  c.num_epochs = 30
  c.data.kind = "image_folder"
  c.data.root = "~/data/300w/train"
  c.data.eval_root = "~/data/300w/test"
  c.data.train_split = ""
  c.data.eval_split = ""
  c.data.batch_size = 32                 # ours: the paper does not give the image batch
  c.log_every_steps = 50
  c.checkpoint_every_steps = 1000
  c.eval_every_steps = 5000
  if arg == "cpu":
    c.model.width, c.data.size, c.model.num_steps = 0.25, 64, 2
    c.data.batch_size, c.num_epochs = 16, 10
  elif arg:
    raise ValueError(f"image_stage: unknown preset {arg!r}; known: 'cpu'")
  return c
