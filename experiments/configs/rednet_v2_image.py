r"""RED-Net v2 (IJCV 2018), the image stage of the curriculum (image -> identity -> video):
the same data, schedule and modules as `image_stage.py` (RED-Net v1), with v2's model and
loss (`rednet_jax.training.configs.rednet_v2_stage`): detection (7 disks) then regression (68
Gaussians), 256-px input, 128-px response maps, the paper's loss values.

Command (accelerators):
  python experiments/run.py --config=rednet_v2_image:resnet --workdir=$HOME/runs/rednet_v2 \
    --config.data.root=... [--config.pretrained_weights=$HOME/weights/resnet152.pt]
Presets: resnet (ResNet-152, the paper's best; default), vgg (VGG-16), resnet_cpu / vgg_cpu
(width 1/8, ResNet-50, 128 px: a model two CPU cores train in hours).
Hardware: one GPU or TPU host. Expected time and result: not measured yet (no accelerator lent;
the paper reports the whole curriculum: AFLW 6.33 % ResNet, 6.85 % VGG, Table 5).
"""

from rednet_jax.training import configs


def get_config(arg: str = ""):
  return configs.rednet_v2_from_v1_config("image_stage.py", arg)
