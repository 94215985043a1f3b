"""Config resolution: bare names, paths, presets, overrides, and clear errors."""

import os
import re

import pytest

from rednet_jax.training.configs import (CONFIGS_DIR, ConfigError, load_config, resolve_config_argument,
                                validate)


@pytest.mark.parametrize("name", ["image_stage", "identity_stage", "video_stage"])
def test_stage_configs_have_the_papers_settings(name):
  c = load_config(name)
  assert c.optimizer.learning_rate == 0.01 and c.optimizer.momentum == 0.9
  assert c.optimizer.decay_rate == 0.8 and c.optimizer.decay_every_epochs == 10
  assert c.model.num_steps == 3 and tuple(c.model.feedback_squares) == (7, 5, 3)
  assert c.data.size == 128 and c.model.width == 1.0
  expected = {"image_stage": (30, False, False, ""), "identity_stage": (20, True, False, "image"),
              "video_stage": (50, True, True, "identity")}[name]
  assert (c.num_epochs, c.model.use_identity, c.model.use_temporal, c.init_from) == expected
  if name == "video_stage":
    assert c.data.clip_length == 10 and c.data.batch_size == 5 and c.data.clips_per_video == 100
    assert c.data.kind == "300vw" and not c.data.augment


def test_presets_overrides_and_linked_fields():
  cpu = load_config("video_stage:cpu")
  assert (cpu.model.width, cpu.data.size, cpu.model.num_steps) == (0.25, 64, 2)
  c = load_config("video_stage:cpu", ["data.batch_size=8", "model.num_steps=4",
                                      "data.num_landmarks=7"])
  assert c.data.batch_size == 8
  assert c.model.scan_unroll == 4            # follows num_steps
  assert c.model.num_landmarks == 7          # follows data.num_landmarks
  by_path = load_config(os.path.join(CONFIGS_DIR, "video_stage.py") + ":cpu")
  assert by_path.to_dict() == cpu.to_dict()


def test_unknown_field_preset_and_name_are_errors():
  with pytest.raises(Exception, match="no_such_field"):
    load_config("video_stage", ["data.no_such_field=1"])
  with pytest.raises(Exception, match="unknown preset .gpu."):
    load_config("video_stage:gpu")
  with pytest.raises(ValueError, match=r"no config named 'vidoe_stage'.*video_stage"):
    resolve_config_argument(["run.py", "--config=vidoe_stage"])


def test_resolution_leaves_paths_and_other_flags_alone(tmp_path):
  argv = ["run.py", "--config=video_stage:cpu", "--workdir=/x", "--config.seed=3"]
  resolved = resolve_config_argument(argv)
  assert resolved[1] == "--config=" + os.path.join(CONFIGS_DIR, "video_stage.py") + ":cpu"
  assert resolved[2:] == argv[2:]
  own = tmp_path / "mine.py"
  own.write_text("from rednet_jax.training.configs import base_stage\n"
                 "def get_config(arg=''):\n  return base_stage('x' + arg)\n")
  assert resolve_config_argument(["run.py", f"--config={own}:y"])[1] == f"--config={own}:y"
  assert load_config(f"{own}:y").name == "xy"


def test_a_stage_field_on_a_curriculum_applies_to_every_stage():
  argv = ["run.py", "--config=quickstart:tiny", "--config.model.num_steps=3",
          "--config.video.seed", "4"]
  resolved = resolve_config_argument(argv)
  assert resolved[2:] == [f"--config.{s}.model.num_steps=3" for s in ("image", "identity", "video")
                          ] + ["--config.video.seed", "4"]
  c = load_config("quickstart:tiny", ["model.num_steps=3", "identity.seed=5"])
  assert [c[s].model.num_steps for s in c.curriculum] == [3, 3, 3]
  assert [c[s].model.scan_unroll for s in c.curriculum] == [3, 3, 3]
  assert [c[s].seed for s in c.curriculum] == [0, 5, 0]


def test_unknown_override_names_the_per_stage_form_and_close_fields():
  with pytest.raises(ConfigError, match=r"--config.model.num_stpes: .*--config.STAGE.model.num"
                     r"_stpes.*did you mean model.num_steps"):
    load_config("quickstart", ["model.num_stpes=3"])
  with pytest.raises(ConfigError, match=r"not a field of video_stage; did you mean data.batch_size"):
    load_config("video_stage", ["data.batch_sise=3"])


def test_validation_names_every_bad_field_as_typed():
  c = load_config("quickstart:tiny", ["image.data.batch_size=0", "checkpoint_every_steps=0",
                                      "video.optimizer.name=adamw", "identity.data.size=48",
                                      "image.profile_steps=(5, 2)"])
  with pytest.raises(ConfigError) as error:
    validate(c)
  message = str(error.value)
  for expected in ("image.data.batch_size=0: must be a positive integer",
                   "image.checkpoint_every_steps=0", "video.checkpoint_every_steps=0",
                   "video.optimizer.name='adamw': must be 'sgd' (paper) or 'adam'",
                   "identity.data.size=48: must be a multiple of 32",
                   "image.profile_steps=(5, 2): must be () or (first, last)"):
    assert expected in message
  assert "identity.data.batch_size" not in message
  validate(load_config("quickstart:tiny"))
  for name in ("image_stage", "identity_stage", "video_stage:cpu", "ytf68", "faces300w"):
    validate(load_config(name))
  # Real-face fields: read-out, augmentation, a second source (set together, images only).
  c = load_config("faces300w", ["image.model.readout=soft_argmax", "video.model.readout_window=4",
                                "image.data.augmentation.blur_prob=1.5",
                                "image.data.extra_weight=0.3"])
  with pytest.raises(ConfigError) as error:
    validate(c)
  message = str(error.value)
  for expected in ("image.model.readout='soft_argmax': must be one of",
                   "video.model.readout_window=4: must be an odd positive number",
                   "image.data.augmentation.blur_prob=1.5: must be in [0, 1]",
                   "image.data.extra_weight=0.3: set data.extra_root"):
    assert expected in message


def test_run_help_lists_every_config_and_its_presets():
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  result = subprocess.run([sys.executable, os.path.join(os.path.dirname(CONFIGS_DIR), "run.py"),
                           "--help"], capture_output=True, text=True, timeout=120)
  names = sorted(f[:-3] for f in os.listdir(CONFIGS_DIR) if f.endswith(".py"))
  for name in names:
    source = open(os.path.join(CONFIGS_DIR, name + ".py")).read()
    presets = re.findall(r'arg == "(\w+)"', source)
    listed = re.search(rf"^  {name}(\[:[\w|]+\])?\s", result.stdout, flags=re.M)
    assert listed, f"run.py --help does not list {name}"
    for preset in presets:
      assert preset in (listed.group(1) or ""), f"{name}:{preset} missing from run.py --help"
  for flag in ("--restart", "--stages", "--workdir"):
    assert flag in result.stdout


def test_constraints_pin_versions_inside_the_declared_ranges():
  """constraints.txt (the versions the README's numbers were measured with) must be
  installable with setup.cfg's ranges."""
  import configparser  # pylint: disable=g-import-not-at-top
  from packaging.requirements import Requirement  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(CONFIGS_DIR))
  pins = {}
  for line in open(os.path.join(repo, "constraints.txt")):
    if line.strip() and not line.startswith("#"):
      name, version = line.strip().split("==")
      pins[name.lower().replace("_", "-")] = version
  setup = configparser.ConfigParser()
  setup.read(os.path.join(repo, "setup.cfg"))
  lines = setup["options"]["install_requires"].splitlines()
  lines += setup["options.extras_require"]["dev"].splitlines()
  for line in lines:
    line = line.split("#")[0].strip()
    if not line:
      continue
    requirement = Requirement(line)
    name = requirement.name.lower().replace("_", "-")
    assert name in pins, f"{name} is not pinned in constraints.txt"
    assert requirement.specifier.contains(pins[name]), (name, pins[name], str(requirement))
