r"""Runs an ablation sweep: every variant of a sweep file in its own sub-workdir, then one table.

  python experiments/sweep.py --config=quickstart --sweep=rednet_v1_ablations:steps \
    --workdir=/tmp/sweeps/v1_steps
  python experiments/sweep.py --config=quickstart --sweep=seeds:3 --workdir=/tmp/sweeps/seeds \
    --parallel=2
  python experiments/sweep.py --config=video_stage --sweep=rednet_v1_ablations:steps \
    --workdir=$HOME/sweeps/k --launcher=slurm --slurm_option=--gres=gpu:8 --slurm_option=--time=24:00:00
  python experiments/sweep.py --workdir=/tmp/sweeps/v1_steps --collect_only

--sweep=NAME[:ARG] is `experiments/sweeps/NAME.py` (its `get_sweep(ARG)`). Variant i runs
`experiments/run.py --config=CONFIG --workdir=WORKDIR/<overrides> --config.k=v ...`; common
overrides given here as `--config.a.b=v` go to every variant. Every variant's config is built
and validated before anything starts.

Launchers: `local` runs the variants here, `--parallel` at a time (default 1; each run uses
every core, so more than one at a time pays only on a machine with cores to spare); `slurm`
writes `WORKDIR/slurm/array.sh` (an `sbatch --array` script, one variant per task, throttled
to `--parallel` tasks at once) and submits it with `sbatch` (`--dry_run`: prints it instead).
Re-running the same command is safe: finished variants are skipped, interrupted ones resume,
and a variant whose recorded config differs stops with the differing fields. When the local
runs end (or with --collect_only) the results of every variant are written to
WORKDIR/results.md, results.csv and results.png.
"""

import concurrent.futures
import os
import subprocess
import sys

from absl import app, flags

from rednet_jax import cli
from rednet_jax.training import configs
from rednet_jax.training import sweeps

_CONFIG = flags.DEFINE_string("config", None, "Config NAME[:PRESET] or path, as for run.py.")
_SWEEP = flags.DEFINE_string("sweep", None, "Sweep NAME[:ARG] (experiments/sweeps/NAME.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep folder (one sub-workdir per variant).",
                               required=True)
_LAUNCHER = flags.DEFINE_enum("launcher", "local", ["local", "slurm"], "Where variants run.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Variants at once (local) / array throttle "
                                 "(slurm; 0: no limit).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "slurm: write and print the script, do not submit.")
_SLURM_OPTIONS = flags.DEFINE_multi_string("slurm_option", [], "An #SBATCH option for every "
                                           "task, e.g. --partition=gpu (repeatable).")
_COLLECT_ONLY = flags.DEFINE_bool("collect_only", False, "Only gather the results table.")

_COMMON: list[str] = []     # --config.a.b=v arguments, taken out of argv before absl parses it


def _run_local(commands, names, workdir: str, parallel: int) -> list[str]:
  def run(i):
    log = os.path.join(workdir, names[i], "run.log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    print(f"[{i + 1}/{len(commands)}] {names[i]}: running (log: {log})", flush=True)
    with open(log, "a", encoding="utf-8") as f:
      f.write("$ " + " ".join(commands[i]) + "\n")
      f.flush()
      code = subprocess.call(commands[i], stdout=f, stderr=subprocess.STDOUT)
    last = ""
    if code:
      with open(log, encoding="utf-8", errors="replace") as f:
        last = ([line for line in f.read().splitlines() if line.strip()] or [""])[-1]
    print(f"[{i + 1}/{len(commands)}] {names[i]}: " + ("done" if code == 0 else
          f"FAILED (exit {code}): {last}  (log: {log})"), flush=True)
    return code

  with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
    codes = list(pool.map(run, range(len(commands))))
  return [names[i] for i, code in enumerate(codes) if code]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  workdir = os.path.abspath(os.path.expanduser(_WORKDIR.value))
  if _COLLECT_ONLY.value:
    print(sweeps.collect(workdir)["markdown"])
    return
  if not _CONFIG.value or not _SWEEP.value:
    raise configs.ConfigError("--config and --sweep are needed (or --collect_only)")
  config_spec = _CONFIG.value
  name, sep, preset = config_spec.partition(":")
  if "/" in name or name.endswith(".py"):      # a path: make it work from the repository root
    config_spec = os.path.abspath(os.path.expanduser(name)) + sep + preset
  variants = sweeps.load_sweep(_SWEEP.value)
  names = [sweeps.variant_name(v) for v in variants]
  stage_names = None
  for name, overrides in zip(names, variants):   # every variant's config, before any run
    spec, overrides = sweeps.variant_config(config_spec, overrides)
    config = configs.load_config(spec, _COMMON + [
        f"{k}={sweeps.format_value(v)}" for k, v in overrides.items()])
    try:
      configs.validate(config)
    except configs.ConfigError as e:
      raise configs.ConfigError(f"variant {name}: {e}") from None
    stage_names = [c.name for _, c in configs.stage_configs(config)]
  commands = [sweeps.run_command(config_spec, os.path.join(workdir, n), _COMMON, v)
              for n, v in zip(names, variants)]
  sweeps.write_manifest(workdir, {
      "config": config_spec, "sweep": _SWEEP.value, "common_overrides": _COMMON,
      "stages": stage_names, "command": " ".join(["python", "experiments/sweep.py"] + sys.argv[1:]
                                                  + [f"--config.{o}" for o in _COMMON]),
      "variants": [{"name": n, "overrides": v} for n, v in zip(names, variants)]})
  status = [sweeps.variant_status(os.path.join(workdir, n), stage_names) for n in names]
  todo = [i for i, s in enumerate(status) if s != "finished"]
  print(f"{len(variants)} variants of {_SWEEP.value} on {config_spec}: "
        f"{len(variants) - len(todo)} finished, {len(todo)} to run", flush=True)

  if _LAUNCHER.value == "slurm":
    if not todo:
      print(sweeps.collect(workdir)["markdown"])
      return
    script = sweeps.slurm_script(workdir, "rednet-" + _SWEEP.value.replace(":", "-"), commands,
                                 todo, _SLURM_OPTIONS.value, _PARALLEL.value)
    os.makedirs(os.path.join(workdir, "slurm"), exist_ok=True)
    path = os.path.join(workdir, "slurm", "array.sh")
    with open(path, "w", encoding="utf-8") as f:
      f.write(script)
    if _DRY_RUN.value:
      print(f"# {path} (not submitted: --dry_run)\n{script}")
      return
    try:
      result = subprocess.run(["sbatch", path], capture_output=True, text=True, check=False)
    except FileNotFoundError:
      raise configs.ConfigError(f"no sbatch command here: submit {path} from a SLURM login node "
                                "(it was written), or use --dry_run to print it") from None
    if result.returncode:
      raise configs.ConfigError(f"sbatch {path} failed: {result.stderr.strip()}")
    print(result.stdout.strip(), f"({len(todo)} tasks; collect with --collect_only when done)")
    return

  failed = _run_local([commands[i] for i in todo], [names[i] for i in todo], workdir,
                      _PARALLEL.value)
  print(sweeps.collect(workdir)["markdown"])
  if failed:
    print(f"error: {len(failed)} variant(s) failed: {', '.join(failed)}", file=sys.stderr)
    sys.exit(1)


def _take_config_overrides(argv: list[str]) -> list[str]:
  rest = []
  for arg in argv:
    if arg.startswith("--config."):
      _COMMON.append(arg[len("--config."):])
    else:
      rest.append(arg)
  return rest


if __name__ == "__main__":
  cli.run(main, _take_config_overrides)
