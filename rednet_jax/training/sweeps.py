"""Ablation sweeps: sweep files, variant names, launching, and one table of every variant's
results.

A sweep file `experiments/sweeps/NAME.py` defines `get_sweep(arg)` returning a list of
override dicts, built with `sweep`, `product` and `zipit` (the big_vision / scenic idiom):

  def get_sweep(arg):
    return product(sweep("model.num_steps", [1, 2, 3, 4]), sweep("seed", [0, 1, 2]))

Each dict is one variant: `{"model.num_steps": 3, "seed": 1}` runs
`experiments/run.py --config=... --config.model.num_steps=3 --config.seed=1` in its own
sub-workdir named after the overrides (`model.num_steps=3,seed=1`); the key `preset` selects
the config file's preset instead of a field (`sweep("preset", ["2d_cpu", "3d_cpu"])`). `experiments/sweep.py`
launches them and `collect()` gathers the results.
"""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import math
import os
import re
import shlex
import sys
from typing import Any, Iterable, Sequence

from rednet_jax.training import configs

SWEEPS_DIR = os.path.join(os.path.dirname(configs.CONFIGS_DIR), "sweeps")
REPO_ROOT = os.path.dirname(os.path.dirname(configs.CONFIGS_DIR))
MANIFEST = "sweep.json"
PRESET = "preset"      # pseudo-field of a variant: the config file's preset (variant_config)
METRICS = (("nme_io", "NME io (%)", "{:.2f}"), ("fr10_io", "FR@10 (%)", "{:.1f}"),
           ("auc10_io", "AUC@10", "{:.3f}"))


def sweep(field: str, values: Iterable[Any]) -> list[dict[str, Any]]:
  """One field over `values`: [{field: v} for v in values]."""
  return [{field: v} for v in values]


def product(*sweeps: Sequence[dict]) -> list[dict[str, Any]]:
  """Every combination of the given sweeps (later fields vary fastest)."""
  return [dict(itertools.chain.from_iterable(d.items() for d in combo))
          for combo in itertools.product(*sweeps)]


def zipit(*sweeps: Sequence[dict]) -> list[dict[str, Any]]:
  """The sweeps side by side (all of one length): the i-th variant merges their i-th dicts."""
  lengths = {len(s) for s in sweeps}
  if len(lengths) > 1:
    raise ValueError(f"zipit: sweeps of different lengths {sorted(lengths)}")
  return [dict(itertools.chain.from_iterable(d.items() for d in row)) for row in zip(*sweeps)]


def format_value(value: Any) -> str:
  """A value as `--config.a=VALUE` parses it back."""
  if isinstance(value, (list, tuple)):
    # Strings inside a tuple are quoted: unquoted, the flag parser reads one string.
    items = [repr(v) if isinstance(v, str) else format_value(v) for v in value]
    return "(" + ",".join(items) + ("," if len(value) == 1 else "") + ")"
  return str(value)


def variant_name(overrides: dict[str, Any]) -> str:
  """A sub-workdir name from the overrides ('baseline' for none)."""
  if not overrides:
    return "baseline"
  name = ",".join(f"{k}={format_value(v)}" for k, v in overrides.items()).replace("'", "")
  return re.sub(r"[^A-Za-z0-9._=,+()-]", "_", name)


def load_sweep(spec: str, sweeps_dir: str = SWEEPS_DIR) -> list[dict[str, Any]]:
  """`NAME[:ARG]` (a file of `sweeps_dir`, or a path to one) -> its list of override dicts."""
  name, _, arg = spec.partition(":")
  path = name if name.endswith(".py") or os.sep in name else os.path.join(sweeps_dir, name + ".py")
  if not os.path.isfile(path):
    known = sorted(f[:-3] for f in os.listdir(sweeps_dir) if f.endswith(".py")
                   and not f.startswith("_")) if os.path.isdir(sweeps_dir) else []
    raise configs.ConfigError(f"--sweep={spec}: no sweep file {path}; known: {known}")
  module_spec = importlib.util.spec_from_file_location("_rednet_sweep_file", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  try:
    variants = module.get_sweep(arg)
  except ValueError as e:
    raise configs.ConfigError(f"--sweep={spec}: {e}") from e
  if not variants or not all(isinstance(v, dict) for v in variants):
    raise configs.ConfigError(f"--sweep={spec}: get_sweep must return a non-empty list of dicts")
  names = [variant_name(v) for v in variants]
  if len(set(names)) != len(names):
    raise configs.ConfigError(f"--sweep={spec}: variants repeat: {names}")
  return variants


def variant_config(config_spec: str, overrides: dict) -> tuple[str, dict]:
  """(config spec, field overrides) of one variant. The pseudo-field `preset` picks the config
  file's preset (`--config=NAME:PRESET`), for variants that differ in many fields at once (a
  model family's members); `--config` then names the file without a preset."""
  if PRESET not in overrides:
    return config_spec, overrides
  name, sep, _ = config_spec.partition(":")
  if sep:
    raise configs.ConfigError(f"--config={config_spec}: the sweep sets the preset of each "
                              f"variant; give --config={name}")
  return (f"{name}:{overrides[PRESET]}",
          {k: v for k, v in overrides.items() if k != PRESET})


def run_command(config_spec: str, workdir: str, common: Sequence[str], overrides: dict,
                python: str = sys.executable) -> list[str]:
  """The `experiments/run.py` command line of one variant."""
  run_py = os.path.join(os.path.dirname(configs.CONFIGS_DIR), "run.py")
  config_spec, overrides = variant_config(config_spec, overrides)
  return ([python, run_py, f"--config={config_spec}", f"--workdir={workdir}"]
          + [f"--config.{o}" for o in common]
          + [f"--config.{k}={format_value(v)}" for k, v in overrides.items()])


def variant_status(variant_dir: str, stage_names: Sequence[str]) -> str:
  """'finished' (every stage has final.json), 'started', or 'not started'."""
  done = [os.path.exists(os.path.join(variant_dir, s, "final.json")) for s in stage_names]
  if all(done):
    return "finished"
  return "started" if os.path.isdir(variant_dir) else "not started"


def write_manifest(workdir: str, manifest: dict) -> None:
  """Writes `<workdir>/sweep.json`; an existing one made with another config or common
  overrides is a ConfigMismatchError (a sweep never mixes results of two configs)."""
  from rednet_jax.training.run_records import ConfigMismatchError  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, MANIFEST)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
    for key in ("config", "common_overrides"):
      if old.get(key) != manifest[key]:
        raise ConfigMismatchError(
            f"{path}: this sweep workdir was made with {key} {old.get(key)!r}, now "
            f"{manifest[key]!r}; use another --workdir for another config")
  os.makedirs(workdir, exist_ok=True)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(manifest, f, indent=1)
  os.replace(path + ".tmp", path)


def slurm_script(workdir: str, name: str, commands: Sequence[Sequence[str]],
                 indices: Sequence[int], options: Sequence[str], parallel: int) -> str:
  """An `sbatch --array` script: array task i runs `commands[i]` (only `indices` are
  submitted: the variants not finished yet)."""
  log_dir = os.path.join(workdir, "slurm")
  throttle = f"%{parallel}" if parallel > 0 else ""
  lines = ["#!/bin/bash", f"#SBATCH --job-name={name}",
           f"#SBATCH --array={','.join(map(str, indices))}{throttle}",
           f"#SBATCH --output={log_dir}/%x-%A_%a.out"]
  lines += [f"#SBATCH {o}" for o in options]
  lines += ["# One sweep variant per array task; re-submitting resumes unfinished ones.",
            "set -euo pipefail", f"cd {shlex.quote(REPO_ROOT)}",
            'case "$SLURM_ARRAY_TASK_ID" in']
  for i, command in enumerate(commands):
    lines.append(f"  {i}) exec {shlex.join(command)} ;;")
  lines += ['  *) echo "no variant $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;', "esac", ""]
  return "\n".join(lines)


def collect(workdir: str) -> dict[str, Any]:
  """One table of the sweep in `workdir` (from its `sweep.json`): a row per variant with the
  held-out metrics of every stage (final.json), the last stage's parameter count and the
  training time. Writes `results.md`, `results.csv` and `results.png`; when a `seed` field is
  swept, also `results_by_setting.md` (mean, standard deviation, min and max over seeds of
  every other setting). Returns {"rows", "stages", "markdown"}."""
  with open(os.path.join(workdir, MANIFEST), encoding="utf-8") as f:
    manifest = json.load(f)
  stages = manifest["stages"]
  fields = list(dict.fromkeys(k for v in manifest["variants"] for k in v["overrides"]))
  rows = []
  for variant in manifest["variants"]:
    # A field a variant does not override keeps the config's value: shown as "default".
    row = {"variant": variant["name"],
           **{k: variant["overrides"].get(k, "default") for k in fields}}
    seconds = 0.0
    for stage in stages:
      path = os.path.join(workdir, variant["name"], stage, "final.json")
      final = {}
      if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
          final = json.load(f)
      for key, _, _ in METRICS:
        row[f"{stage}/{key}"] = final.get(key, math.nan)
      seconds += final.get("train_seconds", math.nan)
    row["train_seconds"] = seconds
    row["parameters"] = final.get("parameters", math.nan) / 1e6     # the last stage's model
    row["status"] = variant_status(os.path.join(workdir, variant["name"]), stages)
    rows.append(row)

  last = stages[-1]
  columns = ([(k, k, "{}") for k in fields]
             + [(f"{s}/nme_io", f"{s} NME io (%)", "{:.2f}") for s in stages]
             + [(f"{last}/{k}", f"{last} {label}", fmt) for k, label, fmt in METRICS[1:]]
             + [("parameters", "params (M)", "{:.2f}"), ("train_seconds", "train (s)", "{:.0f}"),
                ("status", "status", "{}")])

  def cell(value, fmt):
    if isinstance(value, float) and math.isnan(value):
      return "-"
    return fmt.format(value)

  header = "| " + " | ".join(label for _, label, _ in columns) + " |"
  lines = [header, "|" + " --- |" * len(columns)]
  lines += ["| " + " | ".join(cell(r[k], fmt) for k, _, fmt in columns) + " |" for r in rows]
  command = manifest.get("command", "")
  markdown = (f"`{command}`\n\n" if command else "") + "\n".join(lines) + "\n"
  with open(os.path.join(workdir, "results.md"), "w", encoding="utf-8") as f:
    f.write(markdown)
  with open(os.path.join(workdir, "results.csv"), "w", encoding="utf-8", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  seed_fields = [k for k in fields if k.split(".")[-1] == "seed"]
  if seed_fields:
    markdown_by_setting = _by_setting(rows, fields, seed_fields, stages)
    with open(os.path.join(workdir, "results_by_setting.md"), "w", encoding="utf-8") as f:
      f.write(markdown_by_setting)
    markdown += "\n" + markdown_by_setting
  _plot(rows, stages, os.path.join(workdir, "results.png"))
  return {"rows": rows, "stages": stages, "markdown": markdown}


def _by_setting(rows, fields, seed_fields, stages) -> str:
  others = [k for k in fields if k not in seed_fields]
  groups: dict[tuple, list[dict]] = {}
  for r in rows:
    groups.setdefault(tuple(r[k] for k in others), []).append(r)
  header = ["| " + " | ".join(others + [f"{s} NME io (%) mean ± sd [min, max]" for s in stages]
                              + ["seeds"]) + " |"]
  header.append("|" + " --- |" * (len(others) + len(stages) + 1))
  for key, members in groups.items():
    cells = list(map(str, key))
    for s in stages:
      values = [r[f"{s}/nme_io"] for r in members if not math.isnan(r[f"{s}/nme_io"])]
      if values:
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) \
            if len(values) > 1 else math.nan
        cells.append(f"{mean:.2f} ± {sd:.2f} [{min(values):.2f}, {max(values):.2f}]")
      else:
        cells.append("-")
    cells.append(str(len(members)))
    header.append("| " + " | ".join(cells) + " |")
  return "\n".join(header) + "\n"


def _plot(rows, stages, path: str) -> None:
  # The Figure API draws without pyplot, leaving a notebook's backend alone.
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(max(4.0, 0.9 * len(rows) + 2), 3.6))
  ax = fig.subplots()
  width = 0.8 / len(stages)
  for i, stage in enumerate(stages):
    ax.bar([j + i * width for j in range(len(rows))], [r[f"{stage}/nme_io"] for r in rows],
           width, label=stage)
  ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))])
  ax.set_xticklabels([r["variant"] for r in rows], rotation=30, ha="right", fontsize=7)
  ax.set_ylabel("held-out NME io (%)")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
