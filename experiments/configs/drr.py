r"""Deep Recurrent Regression (Lai et al., TCSVT 2018; `rednet_jax/models/drr.py`) on 300-W, one
image stage.

Presets: BACKBONE_SIZE, the four settings of the paper's Table VIII: vgg19_256 (the default,
Tables II-IV), vgg19_128, vgg_s_256, vgg_s_128, each with the paper's schedule (20 epochs of 52
augmented samples per face); and shorter schedules: vgg_s_128_gpu (20 epochs of 10 samples),
vgg_s_128_cpu, vgg19_128_cpu and vgg_s_256_cpu (1 epoch of 2 samples, 209 steps, a checkpoint
every 25 steps).

The paper's setting: LFPW + Helen training faces (300-W's train split here; the paper's 300-W
rows also train on AFW, absent here), the face box padded by 0.2 of its width on every side
(`data.box_scale` 1.4 of the landmarks' box), S x S crops, 52 augmented samples per face per
epoch (Table I: rotations {0, +-5, ..., +-30} deg x mirroring x box jitter), SGD momentum 0.9,
weight decay 1e-4, K = 8, N = 50 k-means candidates, b = 6, ImageNet VGG-19 when a torchvision
`vgg19` state_dict is given (`--config.pretrained_weights`). Held out: 300-W common (LFPW +
Helen test); the paper reports inter-pupil NME (`nme_ip` in `evaluate.py`'s table).
  python experiments/run.py --config=drr:vgg19_256 --workdir=$HOME/runs/drr \
    --config.data.root=/path/to/300w --config.pretrained_weights=/path/to/vgg19.pth
Expected result (paper, inter-pupil NME on 300-W common): VGG-19 256 px 4.07 %, VGG-19 128 px
4.57, VGG-S 256 px 4.22, VGG-S 128 px 4.62 (Table VIII). Expected time: the paper's schedule
of vgg_s_128 is 1.74 M samples, about 68 min on one H100 at the 425 frames/s measured below
(VGG-19 256 costs about 3x more per sample on the CPU benchmark; not measured on a GPU).

Measured (one seed): vgg_s_128_gpu on one H100 (80 GB, 12 loader workers), 14.5 min, 300-W
common NME io 3.42 % (about 4.7 % inter-pupil by the io / ip distance ratio of those faces; an
estimate), converged by step 4 as the paper's Table XII:
  python experiments/run.py --config=drr:vgg_s_128_gpu --workdir=$HOME/runs/drr_gpu \
    --config.data.root=$HOME/data/300w --config.data.workers=12
vgg_s_128_cpu on 2 CPU cores: 17.5 s per step of 16, 209 steps, about 1 h: 300-W common NME
8.76 % inter-pupil (6.31 io); with --config.model.recurrent_features=False (Table IX) 9.32 %,
+0.56 (the paper: +0.57 at VGG-S 128); with --config.model.initialisation=given (the mean
shape as S_0, Table X) 9.21 %, +0.45 (the paper: +0.24 at VGG-19 256).
vgg19_128_cpu on 2 CPU cores: 28 s per step of 16, 98 min: 300-W common NME 7.73 % inter-pupil
(5.57 io; LFPW 7.40, Helen 7.96), best at step 3-4 (5.44 io); the paper's VGG-19 128: 4.57 %:
  python experiments/run.py --config=drr:vgg19_128_cpu --workdir=$HOME/runs/drr_vgg19 \
    --config.data.root=$HOME/data/300w
Train step at batch 16 on another 2-core machine, 2-2.5x slower than that one on RED-Net's
benchmark (`python benchmarks/model_step.py --models=drr_vgg_s,drr_vgg19 --widths=1.0
--sizes=128,256 --steps=8 --frames=16 --repeats=1 --unroll=rolled`), and 209 steps at that
rate: VGG-S 128 31 s (1.8 h), VGG-19 128 42 s (2.4 h), VGG-S 256 74 s (4.3 h), VGG-19 256
131 s (7.6 h). Before the weight-gradient chunks of models/conv.py held at least Co rows,
vgg_s_256_cpu trained at 148 s per step there (8.6 h).

Not given by the paper (our choices, named fields): the learning rate and its schedule (SGD
1e-3, x0.1 every 10 epochs), batch size 16, the box-jitter ranges (scale 0.9-1.1, +-7 px at
128 px: the project's), equal weights of the two loss terms with shapes in crop sides (see the
model's docstring). Training from scratch (no ImageNet weights here) needs two departures, on in
every preset: `model.batch_norm=True` and `model.regressor_fan_in_scaling=True`. The paper's
network (both False) diverged within 4 steps at lr 1e-3 and 1e-5 (CPU, batch 4); with BN but
without the scaling, loss 1.7e37 at step 4 on the H100 at lr 1e-3 (README table).
"""

import ml_collections

from rednet_jax.training.configs import base_stage

PRESETS = {"vgg19_256": ("vgg19", 256), "vgg19_128": ("vgg19", 128),
           "vgg_s_256": ("vgg_s", 256), "vgg_s_128": ("vgg_s", 128)}
# Shorter schedules (setting, samples per face per epoch, epochs): the one-GPU run in the README,
# and the 2-core CPU budget.
SCHEDULES = {"vgg_s_128_gpu": ("vgg_s_128", 10, 20), "vgg_s_128_cpu": ("vgg_s_128", 2, 1),
             "vgg19_128_cpu": ("vgg19_128", 2, 1), "vgg_s_256_cpu": ("vgg_s_256", 2, 1)}


def get_config(arg: str = "vgg19_256"):
  if arg not in PRESETS and arg not in SCHEDULES:
    raise ValueError(f"drr: unknown preset {arg!r}; known: {sorted(PRESETS) + sorted(SCHEDULES)}")
  setting, samples_per_image, num_epochs = SCHEDULES.get(arg, (arg, 52, 20))
  backbone, size = PRESETS[setting]
  c = base_stage("image")
  c.model = ml_collections.ConfigDict(dict(
      name="drr", num_landmarks=c.data.get_ref("num_landmarks"), backbone=backbone, width=1.0,
      deconv_features=96, batch_norm=True, num_steps=8, box=6, initialisation="kmeans",
      num_candidates=50, recurrent_features=True, recurrent_combine="sum", lstm_units=0,
      regressor_fan_in_scaling=True,
      scan_unroll=1, dtype="float32"))
  c.loss = ml_collections.ConfigDict(dict(
      weights=ml_collections.ConfigDict(dict(local_mapping=1.0, regression=1.0))))
  c.data.update(kind="image_folder", root="~/data/300w", train_split="train", eval_split="test",
                size=size, box_scale=1.4, batch_size=16, samples_per_image=samples_per_image)
  c.data.augmentation.update(rotation_deg=30.0, rotation_step_deg=5.0, flip=True)
  c.optimizer.update(name="sgd", learning_rate=1e-3, momentum=0.9, decay_rate=0.1,
                     decay_every_epochs=10, weight_decay=1e-4, schedule="step")
  c.z0_in_training = "ground_truth"   # stills: z_0 is the mean shape (initialisation='given')
  c.num_epochs = num_epochs
  c.outputs = ("ced_plot", "refinement_figure")
  if arg.endswith("_cpu"):   # hours per run: an interrupted one resumes from the last 25 steps
    c.checkpoint_every_steps = 25
  return c
