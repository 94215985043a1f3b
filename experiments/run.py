r"""Trains a curriculum stage (or the whole curriculum) from a config.

  python experiments/run.py --config=video_stage --workdir=$HOME/runs/rednet68
  python experiments/run.py --config=video_stage:cpu --config.data.batch_size=8 --workdir=...
  python experiments/run.py --config=quickstart --config.model.num_steps=3 --workdir=...
  python experiments/run.py --config=path/to/my_config.py:ARG --workdir=...

--config=NAME[:PRESET] is `experiments/configs/NAME.py` (a path to any config file works):
  quickstart[:tiny]     the three stages at CPU size on synthetic faces (no data needed)
  image_stage[:cpu]     stage 1 on 300-W-style image folders
  identity_stage[:cpu]  stage 2, from image
  video_stage[:cpu]     stage 3 on 300-VW, from identity
  ytf68                 real faces at CPU size: image stage, then video stage on clips of stills
  faces300w             300-W's human-labelled faces at CPU size, the same two stages (the
                        shipped model's recipe)
  rednet_v2_image[:resnet|vgg|resnet_cpu|vgg_cpu]     RED-Net v2 (IJCV 2018), the three
  rednet_v2_identity[:resnet|vgg|resnet_cpu|vgg_cpu]  stages on the v1 stages' data; ResNet-152
  rednet_v2_video[:resnet|vgg|resnet_cpu|vgg_cpu]     (default) or VGG-16
  rednet_v2_faces300w[:resnet|vgg]  RED-Net v2 on faces300w's image stage at CPU size
  local_motion[:VARIANT|VARIANT_cpu]  Belmonte et al. (WACV 2019), VARIANT one of 2d, 3d,
                        2drnn, 3drnn, 2dfcrnn, 3dfcrnn: on 300-VW; _cpu: 300-W still clips,
                        a 2-core budget
  drr[:vgg19_256|vgg19_128|vgg_s_256|vgg_s_128|vgg_s_128_gpu|vgg_s_128_cpu|vgg19_128_cpu|vgg_s_256_cpu]
                        Deep Recurrent Regression (Lai et al.) on 300-W, the paper's four
                        backbone x crop-size settings; _gpu / _cpu: shorter schedules
`--config.a.b=v` overrides a field (on a curriculum, `--config.model.x=v` sets it in every
stage and `--config.video.model.x=v` in one). Re-running the same command resumes an
interrupted run and reuses finished stages, if their recorded config matches; --restart starts
stages over. User errors end with one line on stderr (--verbose for the traceback).
"""

from absl import app, flags
from ml_collections import config_flags

from rednet_jax import cli
from rednet_jax.training import configs
from rednet_jax.training import trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file[:preset] (see above).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and figures go.")
_RESTART = flags.DEFINE_list("restart", [], "Stages to start over ('all': every stage); their "
                             "old folders are renamed <stage>.replaced-<time>, not deleted.")
_STAGES = flags.DEFINE_list("stages", [], "Curriculum stages to run (default: all), e.g. "
                            "'video' with --config.video.init_from=<another run>/identity.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value, restart=tuple(_RESTART.value),
                           only=tuple(_STAGES.value))


if __name__ == "__main__":
  cli.run(main, configs.resolve_config_argument)
