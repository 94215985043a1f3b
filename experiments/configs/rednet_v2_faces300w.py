r"""RED-Net v2 on real faces at CPU size: the image stage of `faces300w.py` (300-W's LFPW + Helen
training faces, the same augmentation, batch, 4 epochs and Adam schedule) with v2's model and
loss at the `_cpu` size (width 1/8, 128-px input, 64-px maps; ResNet-50 or VGG-16). For the
comparison with the shipped RED-Net v1 (`faces300w`): same data, same CPU budget, same
evaluation commands.

Command:
  python experiments/run.py --config=rednet_v2_faces300w:resnet --workdir=$HOME/runs/v2_300w \
    --config.data.root=/path/to/300w
Presets: resnet (default), vgg.
Hardware: 2 CPU cores. Expected time and result: not measured yet.
"""

import os

from rednet_jax.training import configs


def get_config(arg: str = ""):
  if arg in ("", "resnet"):
    encoder = "resnet"
  elif arg == "vgg":
    encoder = "vgg16"
  else:
    raise ValueError(f"rednet_v2_faces300w: unknown preset {arg!r}; known: 'resnet', 'vgg'")
  image = configs.load_config_file(os.path.join(configs.CONFIGS_DIR, "faces300w.py"), "").image
  image.data.root = os.path.expanduser("~/data/300w")
  return configs.rednet_v2_stage(image, encoder, cpu=True)
