"""Runs a researcher can trust: what a stage folder records, config checks on resume and reuse,
starting stages over, exports read from a run folder, one writer per stage, synthetic renders
that a kill or a second run cannot leave half-done, user errors as one line, and sweeps."""

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import one_device_environment
from rednet_jax import cli
from rednet_jax.training import configs
from rednet_jax.training import run_records
from rednet_jax.training import sweeps
from rednet_jax.training.configs import ConfigError, load_config
from rednet_jax.inference.landmark_model import export_run_stage, load_model, load_run_stage
from rednet_jax.training.input_pipeline import _render_once
from rednet_jax.training.run_records import ConfigMismatchError, StageInUseError, StageLock
from rednet_jax.training.trainer import _check_stage_folders, train_and_evaluate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One image stage of the tiny quickstart, 2 steps: the cheapest real training run.
TINY_STAGE = """
from rednet_jax.training.configs import load_config

def get_config(arg=""):
  c = load_config("quickstart:tiny").image
  c.total_steps, c.outputs, c.checkpoint_every_steps = 2, (), 2
  c.mesh.num_devices = 1     # the trainer on 4 devices: test_training.py
  return c
"""


def tiny_stage(tmp_path, *overrides):
  path = tmp_path / "tiny_stage.py"
  path.write_text(TINY_STAGE)
  return str(path), load_config(str(path), list(overrides))


def run_cli(script, *args, timeout=600):
  return subprocess.run([sys.executable, os.path.join(REPO, "experiments", script), *args],
                        cwd=REPO, capture_output=True, text=True, timeout=timeout,
                        env=one_device_environment())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """(config path, config, workdir) of a finished tiny image stage."""
  tmp = tmp_path_factory.mktemp("trained")
  path, config = tiny_stage(tmp)
  workdir = str(tmp / "run")
  train_and_evaluate(config, workdir)
  return path, config, workdir


def test_a_stage_records_its_config_and_environment(trained):
  _, config, workdir = trained
  record = json.load(open(os.path.join(workdir, "image", "config.json")))
  assert record["config"] == configs.json_roundtrip(config) and len(record["run_id"]) == 32
  runs = [json.loads(line) for line in open(os.path.join(workdir, "image", "runs.jsonl"))]
  assert len(runs) == 1
  for package in ("jax", "flax", "optax", "orbax-checkpoint", "grain", "numpy"):
    assert runs[0]["versions"][package]
  assert runs[0]["device_kinds"] and runs[0]["platform"] and runs[0]["jax_backend"] == "cpu"


def test_a_changed_config_stops_naming_the_fields_and_neutral_fields_may_differ(trained):
  path, _, workdir = trained
  final = os.path.join(workdir, "image", "final.json")
  stamp = os.path.getmtime(final)
  # Result-neutral fields may differ: the finished stage is reused.
  again = train_and_evaluate(load_config(path, ["log_every_steps=7", "data.workers=1"]), workdir)
  assert os.path.getmtime(final) == stamp and again["image"]["frames"] > 0
  changed = load_config(path, ["model.num_steps=2", "optimizer.learning_rate=0.05"])
  with pytest.raises(ConfigMismatchError) as error:
    train_and_evaluate(changed, workdir)
  message = str(error.value)
  assert "model.num_steps: 1 in the run, 2 now" in message
  assert "optimizer.learning_rate: 0.002 in the run, 0.05 now" in message
  assert "new --workdir" in message and "--restart=image" in message
  assert os.path.getmtime(final) == stamp


def test_unknown_stages_in_restart_and_stages_are_errors(trained):
  """(Starting a stage over is run by test_documented_commands.py.)"""
  path, config, workdir = trained
  with pytest.raises(ConfigError, match=r"--restart=vidoe: no stage \['vidoe'\]"):
    train_and_evaluate(config, workdir, restart=("vidoe",))
  with pytest.raises(ConfigError, match=r"--stages=video: no stage \['video'\] .* \['image'\]"):
    train_and_evaluate(config, workdir, only=("video",))


def test_a_later_stage_made_from_an_earlier_run_of_its_init_stage_is_refused(tmp_path):
  """No training: stage folders with records, as a curriculum leaves them."""
  config = load_config("quickstart:tiny")
  stages = configs.stage_configs(config)
  for _, stage in stages[:2]:
    os.makedirs(tmp_path / stage.name)
  image = run_records.write_record(str(tmp_path / "image"), config.image, None)
  run_records.write_record(str(tmp_path / "identity"), config.identity, image["run_id"])
  (tmp_path / "identity" / "final.json").write_text("{}")
  _check_stage_folders(stages, str(tmp_path), ())              # consistent: fine
  with pytest.raises(ConfigMismatchError, match=r"identity was trained from the 'image' stage, "
                     r"which --restart starts over; .*--restart=image,identity"):
    _check_stage_folders(stages, str(tmp_path), ("image",))
  run_records.write_record(str(tmp_path / "image"), config.image, None)   # image trained again
  with pytest.raises(ConfigMismatchError, match=r"initialised from 'image' as it was before"):
    _check_stage_folders(stages, str(tmp_path), ())


def test_export_reads_the_config_from_the_run_folder(trained, tmp_path):
  path, config, workdir = trained
  result = run_cli("export.py", f"--workdir={workdir}", "--stage=image", f"--out={tmp_path / 'm'}")
  assert result.returncode == 0, result.stderr[-2000:]
  exported = load_model(str(tmp_path / "m"))
  info = exported.description["info"]
  assert info["config"] == configs.json_roundtrip(config) and info["training_runs"]
  direct = load_run_stage(workdir, "image")         # the stage used in place, no export
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 255, (80, 80, 3), dtype=np.uint8) for _ in range(2)]
  boxes = [(np.array([40.0, 40.0]), 50.0)] * 2
  np.testing.assert_array_equal(exported.predict(images, boxes)[0], direct.predict(images, boxes)[0])
  # A contradicting config is an error naming the field; a matching one is accepted.
  with pytest.raises(ConfigMismatchError, match=r"model.temporal_residual: False in the run, True"):
    export_run_stage(workdir, "image", str(tmp_path / "m2"),
                     load_config(path, ["model.temporal_residual=True"]))
  export_run_stage(workdir, "image", str(tmp_path / "m3"), load_config(path, ["log_every_steps=3"]))
  # A read-out chosen at export is stored (and recorded beside the trained one); it is what
  # loading the stage with that read-out gives.
  export_run_stage(workdir, "image", str(tmp_path / "m5"), None,
                   {"readout": "probability_centroid", "readout_window": 9})
  wide = load_model(str(tmp_path / "m5"))
  assert wide.description["model"]["readout_window"] == 9
  assert wide.description["info"]["readout_at_export"]["readout_window"] == 9
  np.testing.assert_array_equal(
      wide.predict(images, boxes)[0],
      load_run_stage(workdir, "image", {"readout": "probability_centroid",
                                        "readout_window": 9}).predict(images, boxes)[0])
  with pytest.raises(ValueError, match="only .* may be changed"):
    export_run_stage(workdir, "image", str(tmp_path / "m6"), None, {"width": 1.0})
  bad = run_cli("export.py", f"--workdir={workdir}", "--stage=image", f"--out={tmp_path / 'm4'}",
                f"--config={path}", "--config.model.width=0.5")
  assert bad.returncode == 1 and "model.width: 0.0625 in the run, 0.5 given" in bad.stderr
  assert "Traceback" not in bad.stderr and not (tmp_path / "m4").exists()
  # evaluate/track/predict take --workdir/--stage as well as --checkpoint.
  images_dir = tmp_path / "images"
  images_dir.mkdir()
  import cv2  # pylint: disable=g-import-not-at-top
  cv2.imwrite(str(images_dir / "a.png"), images[0])
  predicted = run_cli("predict.py", f"--workdir={workdir}", "--stage=image",
                      f"--input={images_dir}", f"--out={tmp_path / 'p.json'}")
  assert predicted.returncode == 0, predicted.stderr[-2000:]


def test_a_second_run_on_a_locked_stage_stops_at_once(trained):
  path, _, workdir = trained
  with StageLock(os.path.join(workdir, "image")):
    start = time.time()
    result = run_cli("run.py", f"--config={path}", f"--workdir={workdir}")
  assert result.returncode == 1
  assert f"is being written by process {os.getpid()} on host" in result.stderr
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith("error: ")
  assert time.time() - start < 60


def test_a_lock_dies_with_its_holder(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time\nfrom rednet_jax.training.run_records import StageLock\n"
       f"with StageLock({str(tmp_path / 'stage')!r}):\n  print('held', flush=True)\n"
       "  time.sleep(120)"], stdout=subprocess.PIPE, text=True, cwd=REPO)
  assert holder.stdout.readline().strip() == "held"
  with pytest.raises(StageInUseError, match=f"process {holder.pid} on host"):
    with StageLock(str(tmp_path / "stage")):
      pass
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  with StageLock(str(tmp_path / "stage")):        # no stale lock after kill -9
    pass


def _slow_render(out, files=6, pause=0.05):
  for i in range(files):
    with open(os.path.join(out, f"{i}.txt"), "w", encoding="utf-8") as f:
      f.write(str(i))
    time.sleep(pause)


def test_a_killed_render_leaves_nothing_marked_complete(tmp_path):
  root = str(tmp_path / "synthetic" / "stills")
  script = ("import os, time\nfrom rednet_jax.training.input_pipeline import _render_once\n"
            "def render(out):\n  open(os.path.join(out, '0.txt'), 'w').close()\n"
            "  print('rendering', flush=True)\n  time.sleep(120)\n"
            f"_render_once({root!r}, {{'n': 6}}, render)\n")
  killed = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
  assert killed.stdout.readline().strip() == "rendering"
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  assert not os.path.exists(root)
  _render_once(root, {"n": 6}, _slow_render)
  assert sorted(os.listdir(root)) == ["0.txt", "1.txt", "2.txt", "3.txt", "4.txt", "5.txt",
                                      "COMPLETE"]


def test_concurrent_renders_give_one_complete_folder(tmp_path):
  root = str(tmp_path / "synthetic" / "videos")
  errors = []

  def render():
    try:
      _render_once(root, {"n": 6}, _slow_render)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=render) for _ in range(3)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors
  assert len(os.listdir(root)) == 7
  assert os.listdir(tmp_path / "synthetic") == ["videos"]     # no temporary folder left


def test_user_errors_are_one_line_without_a_traceback(tmp_path):
  bad = run_cli("run.py", "--config=quickstart:tiny", f"--workdir={tmp_path / 'w'}",
                "--config.image.data.batch_size=0", "--config.checkpoint_every_steps=0")
  assert bad.returncode == 1 and "error: bad config values:" in bad.stderr
  assert "image.data.batch_size=0: must be a positive integer" in bad.stderr
  assert "video.checkpoint_every_steps=0" in bad.stderr and "Traceback" not in bad.stderr
  assert not (tmp_path / "w").exists()                       # nothing was built
  verbose = run_cli("run.py", "--config=quickstart:tiny", f"--workdir={tmp_path / 'w'}",
                    "--config.image.data.batch_size=0", "--verbose")
  assert verbose.returncode != 0 and "Traceback" in verbose.stderr
  typo = run_cli("run.py", "--config=quickstart:tiny", f"--workdir={tmp_path / 'w'}",
                 "--config.model.num_stpes=3")
  assert typo.returncode == 1 and "did you mean model.num_steps" in typo.stderr
  assert "Traceback" not in typo.stderr
  missing = run_cli("run.py", "--config=video_stage:cpu", f"--workdir={tmp_path / 'w'}",
                    f"--config.data.root={tmp_path / 'no_300vw'}")
  assert missing.returncode == 1 and "Traceback" not in missing.stderr
  assert "no_300vw" in missing.stderr and "--config.data.root=" in missing.stderr


def test_a_full_disk_is_reported_as_such_wherever_it_is_wrapped():
  try:
    try:
      raise OSError(errno.ENOSPC, "No space left on device", "/w/image/checkpoints/8")
    except OSError as e:
      raise ImportError("cannot import name 'x' during shutdown") from e
  except ImportError as wrapped:
    message = cli.user_error_message(wrapped)
  assert message.startswith("no space left on the device while writing /w/image/checkpoints/8")
  assert "Checkpoints already written are kept" in message
  assert cli.user_error_message(KeyError("a bug")) is None


def test_sweep_helpers_and_variant_names():
  grid = sweeps.product(sweeps.sweep("model.num_steps", [1, 2]), sweeps.sweep("seed", [0, 1]))
  assert grid == [{"model.num_steps": 1, "seed": 0}, {"model.num_steps": 1, "seed": 1},
                  {"model.num_steps": 2, "seed": 0}, {"model.num_steps": 2, "seed": 1}]
  assert sweeps.zipit(sweeps.sweep("a", [1, 2]), sweeps.sweep("b", [3, 4])) == [
      {"a": 1, "b": 3}, {"a": 2, "b": 4}]
  with pytest.raises(ValueError, match="different lengths"):
    sweeps.zipit(sweeps.sweep("a", [1, 2]), sweeps.sweep("b", [3]))
  assert sweeps.variant_name({"model.feedback_squares": (5, 3), "seed": 1}) == \
      "model.feedback_squares=(5,3),seed=1"
  assert sweeps.variant_name({}) == "baseline"
  # Values survive the round trip through the command line.
  c = load_config("quickstart:tiny", [f"{k}={sweeps.format_value(v)}" for k, v in
                                      {"model.feedback_squares": (5, 3),
                                       "video.model.use_temporal": False}.items()])
  assert tuple(c.image.model.feedback_squares) == (5, 3) and c.video.model.use_temporal is False
  for spec in ("rednet_v1_ablations", "rednet_v1_ablations:steps", "rednet_v1_ablations:modules",
               "seeds:3"):
    for variant in sweeps.load_sweep(spec):      # every shipped variant is a valid config
      configs.validate(load_config("quickstart:tiny", [
          f"{k}={sweeps.format_value(v)}" for k, v in variant.items()]))
  assert len(sweeps.load_sweep("rednet_v1_ablations")) == 7
  # RED-Net v2's Table 6 / 7 variants (tuples of strings survive the command line).
  for variant in sweeps.load_sweep("rednet_v2_ablations"):
    c = load_config("rednet_v2_image:resnet_cpu", [
        f"{k}={sweeps.format_value(v)}" for k, v in variant.items()])
    configs.validate(c)
    for k, v in variant.items():
      assert c.model[k.split(".")[-1]] == v
  assert sweeps.variant_name({"model.steps": ("detection",)}) == "model.steps=(detection,)"
  # The local-motion sweep's variants are presets of one config file.
  variants = sweeps.load_sweep("local_motion")
  assert [v["preset"] for v in variants] == ["2d_cpu", "3d_cpu", "2drnn_cpu", "3drnn_cpu",
                                             "2dfcrnn_cpu", "3dfcrnn_cpu"]
  for variant in variants + sweeps.load_sweep("local_motion:paper"):
    spec, overrides = sweeps.variant_config("local_motion", {**variant, "seed": 2})
    assert spec == "local_motion:" + variant["preset"] and overrides == {"seed": 2}
    configs.validate(load_config(spec))
  # CPU presets: 300-W still clips, then ytf68's real 3-frame sequences from that stage.
  stages = dict(configs.stage_configs(load_config(
      "local_motion:3drnn_cpu", ["data_root=/d/300w", "sequences_root=/d/ytf68"])))
  assert list(stages) == ["train.", "sequences."]
  assert (stages["train."].data.kind, stages["train."].data.root) == ("still_clips", "/d/300w")
  assert stages["train."].eval.data.root == "/d/300w"
  sequences = stages["sequences."]
  assert (sequences.data.kind, sequences.data.root, sequences.init_from) == (
      "image_sequences", "/d/ytf68", "train")
  assert sequences.model.to_dict() == stages["train."].model.to_dict()
  command = sweeps.run_command("local_motion", "/tmp/w", [], variants[1])
  assert "--config=local_motion:3d_cpu" in command and not any("preset" in a for a in command)
  with pytest.raises(configs.ConfigError, match="sets the preset"):
    sweeps.variant_config("local_motion:2d", variants[0])


def test_a_local_sweep_of_two_variants_runs_skips_and_collects(tmp_path):
  path, _ = tiny_stage(tmp_path)
  workdir = tmp_path / "sweep"
  args = [f"--config={path}", "--sweep=seeds:2", f"--workdir={workdir}",
          "--config.log_every_steps=1"]
  first = run_cli("sweep.py", *args)
  assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
  assert "[1/2] seed=0: done" in first.stdout and "[2/2] seed=1: done" in first.stdout
  for seed in (0, 1):
    record = json.load(open(workdir / f"seed={seed}" / "image" / "config.json"))
    assert record["config"]["seed"] == seed and record["config"]["log_every_steps"] == 1
  table = (workdir / "results.md").read_text()
  assert table.count("| finished |") == 2 and "image NME io (%)" in table
  final = json.load(open(workdir / "seed=0" / "image" / "final.json"))
  assert final["parameters"] > 0 and f"| {final['parameters'] / 1e6:.2f} |" in table
  rows = (workdir / "results.csv").read_text().splitlines()
  assert rows[0].startswith("variant,seed,image/nme_io") and len(rows) == 3
  assert "[" in (workdir / "results_by_setting.md").read_text()     # mean ± sd [min, max]
  assert (workdir / "results.png").stat().st_size > 0
  nme = [float(r.split(",")[2]) for r in rows[1:]]
  assert all(0 < v < 200 for v in nme)
  again = run_cli("sweep.py", *args)                  # re-entrant: nothing left to run
  assert again.returncode == 0 and "2 finished, 0 to run" in again.stdout
  other = run_cli("sweep.py", *args[:-1], "--config.log_every_steps=2")
  assert other.returncode == 1 and "made with common_overrides" in other.stderr


def test_slurm_dry_run_writes_an_array_script(tmp_path):
  result = run_cli("sweep.py", "--config=quickstart:tiny", "--sweep=rednet_v1_ablations:steps",
                   f"--workdir={tmp_path}", "--launcher=slurm", "--dry_run", "--parallel=2",
                   "--slurm_option=--gres=gpu:1")
  assert result.returncode == 0, result.stderr[-2000:]
  script = (tmp_path / "slurm" / "array.sh").read_text()
  assert "#SBATCH --array=0,1,2,3%2" in script and "#SBATCH --gres=gpu:1" in script
  for k in (1, 2, 3, 4):
    assert (f"--workdir={tmp_path}/model.num_steps={k} --config.model.num_steps={k}" in script)
  assert script in result.stdout
  bad = run_cli("sweep.py", "--config=quickstart:tiny", "--sweep=nope", f"--workdir={tmp_path}")
  assert bad.returncode == 1 and "no sweep file" in bad.stderr and "seeds" in bad.stderr
