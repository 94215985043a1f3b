"""The commands of experiments/README.md, as written, at tiny size: the first bash block runs
(quickstart -> quickstart:tiny, /tmp/ -> a temporary folder), in order, on one CPU device, with
the quickstart's end-to-end checks; the commands that need datasets are built and validated."""

import json
import os
import re
import shlex
import subprocess
import sys

import flax
import numpy as np
import orbax.checkpoint as ocp

from conftest import one_device_environment
from rednet_jax.training import checkpoints
from rednet_jax.training import configs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "experiments", "README.md")


def bash_blocks() -> list[list[str]]:
  text = open(README, encoding="utf-8").read()
  blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
  return [[line for line in block.splitlines() if line.strip() and not line.startswith("#")]
          for block in blocks]


def saved_variables(stage_checkpoints: str) -> dict:
  manager = checkpoints.checkpoint_manager(stage_checkpoints)
  tree = manager.restore(manager.latest_step(),
                         args=ocp.args.Composite(state=ocp.args.PyTreeRestore()))["state"]
  manager.close()
  return flax.traverse_util.flatten_dict(tree["variables"], sep="/")


def run(command: str, tmp_path) -> subprocess.CompletedProcess:
  command = command.replace("--config=quickstart ", "--config=quickstart:tiny ")
  command = command.replace("/tmp/", f"{tmp_path}/")
  argv = shlex.split(command)
  assert argv[0] == "python"
  result = subprocess.run([sys.executable] + argv[1:], cwd=REPO, capture_output=True, text=True,
                          timeout=900, env=one_device_environment())
  assert result.returncode == 0, (command, result.stdout[-2000:], result.stderr[-3000:])
  return result


def test_the_first_block_runs_as_written_at_tiny_size(tmp_path):
  commands = bash_blocks()[0]
  assert len(commands) == 6 and all(c.startswith("python experiments/") for c in commands)
  qs = tmp_path / "qs"

  run(commands[0], tmp_path)        # the whole tiny curriculum
  for stage in ("image", "identity", "video"):
    folder = qs / stage
    assert (folder / "final.json").exists() and (folder / "ced.png").stat().st_size > 0
    assert (folder / "config.json").exists() and (folder / "runs.jsonl").exists()
    lines = [json.loads(line) for line in open(folder / "metrics.jsonl")]
    assert {line["split"] for line in lines} == {"train", "eval"}
    assert all(np.isfinite(line["loss"]) for line in lines if line["split"] == "train")
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(folder / "tensorboard"))
    final = json.load(open(folder / "final.json"))
    assert 0 < final["nme_io"] < 100 and final["frames"] > 0
  assert (qs / "video" / "tracked.mp4").stat().st_size > 0
  assert (qs / "video" / "refinement.png").stat().st_size > 0
  assert (qs / "ced_by_stage.png").exists() and "| video |" in (qs / "summary.md").read_text()
  # Every leaf of the identity stage but its classifier existed in the image stage.
  image = saved_variables(str(qs / "image" / "checkpoints"))
  identity = saved_variables(str(qs / "identity" / "checkpoints"))
  assert {p for p in identity if p not in image} == {"params/identity/logits/bias",
                                                      "params/identity/logits/kernel"}
  k = json.load(open(qs / "identity" / "config.json"))["config"]["model"]["num_steps"]

  run(commands[1], tmp_path)        # video stage alone, K = 3, from the run's identity stage
  ablation = tmp_path / "qs_video_k3"
  assert not {"image", "identity"} & set(os.listdir(ablation))
  record = json.load(open(ablation / "video" / "config.json"))
  assert record["config"]["model"]["num_steps"] == 3 and k != 3
  assert record["init_from_run_id"] == json.load(open(qs / "identity" / "config.json"))["run_id"]
  video = saved_variables(str(ablation / "video" / "checkpoints"))
  per_step = [p for p in video if p.startswith("batch_stats/spatial/")]
  assert per_step and all(video[p].shape[0] == 3 for p in per_step)
  assert not any("temporal" in p for p in video)

  stamp = os.path.getmtime(qs / "video" / "final.json")
  run(commands[2], tmp_path)        # the video stage again with another seed
  (aside,) = [n for n in os.listdir(qs) if n.startswith("video.replaced-")]
  assert os.path.getmtime(qs / aside / "final.json") == stamp
  assert json.load(open(qs / "video" / "config.json"))["config"]["seed"] == 1

  run(commands[3], tmp_path)        # export from the run folder
  model = json.load(open(tmp_path / "qs_model" / "model.json"))
  assert model["info"]["config"]["seed"] == 1

  run(commands[4], tmp_path)        # evaluate straight from the run folder
  results = json.load(open(tmp_path / "qs_eval" / "results.json"))
  assert results["subsets"]["all"]["frames"] > 0

  printed = run(commands[5], tmp_path).stdout       # SLURM script, dry run
  assert "#SBATCH --array=0,1,2,3" in printed and "--config.model.num_steps=4" in printed


def test_the_dataset_commands_build_valid_configs():
  commands = bash_blocks()[1]
  assert len(commands) == 7
  for command in commands:
    argv = shlex.split(command)
    spec = next(a.split("=", 1)[1] for a in argv if a.startswith("--config="))
    overrides = [a[len("--config."):] for a in argv if a.startswith("--config.")]
    config = configs.load_config(spec, overrides)
    configs.validate(config)
    for override in overrides:
      field, value = override.split("=", 1)
      node = config
      for part in field.split("."):
        node = node[part]
      assert str(node) == value or node == type(node)(value) or str(node) in value, override
