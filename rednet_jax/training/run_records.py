"""What a stage folder records about the run that made it, and who may write into it.

`<stage>/config.json`   the resolved stage config, written when the stage first starts, with a
                        `run_id` and the `run_id` of the stage it was initialised from; later runs
                        resume (or reuse a finished stage) only if their config matches it
                        (`configs.RESULT_NEUTRAL_FIELDS` may differ).
`<stage>/runs.jsonl`    one line per start or resume: library versions, platform, devices,
                        host, command, time.
`<workdir>/.<stage>.lock`  held (fcntl) by the process writing the stage; the kernel drops it
                        when that process dies, kill -9 included, so no stale lock is left
                        behind. It sits beside the stage folder so that starting a stage over
                        (renaming its folder) happens under the lock.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import importlib.metadata
import json
import os
import platform
import socket
import sys
import uuid
from typing import Any

from rednet_jax.training import configs

CONFIG_FILE, RUNS_FILE = "config.json", "runs.jsonl"
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy",
            "tensorflow-datasets", "opencv-python-headless", "ml-collections")


class ConfigMismatchError(configs.ConfigError):
  """A stage folder was made with another config than the one asked for now."""


class StageInUseError(RuntimeError):
  """Another process holds the stage folder."""


def environment() -> dict[str, Any]:
  """Versions, platform and devices of this process (for `runs.jsonl` and exported models)."""
  import jax  # pylint: disable=g-import-not-at-top
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  devices = jax.devices()
  return {"time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
          "host": socket.gethostname(), "pid": os.getpid(), "command": " ".join(sys.argv),
          "python": platform.python_version(), "platform": platform.platform(),
          "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
          "versions": versions, "jax_backend": jax.default_backend(),
          "device_kinds": sorted({d.device_kind for d in devices}),
          "device_count": jax.device_count(), "process_count": jax.process_count()}


def read_record(stage_dir: str) -> dict | None:
  path = os.path.join(stage_dir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise configs.ConfigError(f"{path}: not valid JSON ({e}); this stage folder's record is "
                                "damaged: start the stage over (--restart) or use a new "
                                "--workdir") from e


def has_results(stage_dir: str) -> bool:
  """Whether a stage folder holds anything a run would resume from or reuse."""
  return (os.path.exists(os.path.join(stage_dir, "final.json"))
          or os.path.isdir(os.path.join(stage_dir, "checkpoints"))
          and any(n.isdigit() for n in os.listdir(os.path.join(stage_dir, "checkpoints"))))


def check_record(stage_dir: str, config, field_prefix: str = "",
                 init_run_id: str | None = None, restart_hint: str = "") -> dict | None:
  """Raises ConfigMismatchError when `stage_dir` was made with a config other than `config`
  (result-neutral fields aside) or from another run of the stage it starts from
  (`init_run_id`: that stage's current `run_id`). Returns the record (None if there is none)."""
  record = read_record(stage_dir)
  name = field_prefix.rstrip(".") or config.name
  ways_out = (f"Either use a new --workdir, or start this stage over with "
              f"--restart={restart_hint or name} (the old folder is kept, renamed "
              f"{os.path.basename(stage_dir)}.replaced-<time>).")
  if record is None:
    if has_results(stage_dir):
      raise ConfigMismatchError(
          f"{stage_dir} holds checkpoints or results but no {CONFIG_FILE} (made by an older "
          f"version), so nothing shows which config made them. {ways_out}")
    return None
  diffs = configs.differences(record["config"], config, field_prefix)
  if diffs:
    shown = "\n".join(f"  {field}: {old!r} in the run, {new!r} now" for field, old, new in diffs)
    raise ConfigMismatchError(
        f"{stage_dir} was made with another config ({len(diffs)} field"
        f"{'s' if len(diffs) > 1 else ''} differ; fields that cannot change results may "
        f"differ: {', '.join(configs.RESULT_NEUTRAL_FIELDS)}):\n{shown}\n{ways_out}")
  if record.get("init_from_run_id") != init_run_id and has_results(stage_dir):
    raise ConfigMismatchError(
        f"{stage_dir} was initialised from {config.init_from!r} as it was before that stage was "
        f"trained again (run {record.get('init_from_run_id')}, now {init_run_id}). {ways_out}")
  return record


def write_record(stage_dir: str, config, init_run_id: str | None) -> dict:
  """Writes `config.json` for a stage that starts now; returns it."""
  record = {"run_id": uuid.uuid4().hex, "init_from_run_id": init_run_id,
            "config": configs.json_roundtrip(config)}
  _write_json_atomically(os.path.join(stage_dir, CONFIG_FILE), record)
  return record


def append_run(stage_dir: str, entry: dict) -> None:
  with open(os.path.join(stage_dir, RUNS_FILE), "a", encoding="utf-8") as f:
    f.write(json.dumps(entry) + "\n")


def _write_json_atomically(path: str, data: Any) -> None:
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(data, f, indent=1)
  os.replace(path + ".tmp", path)


def set_aside(stage_dir: str) -> str | None:
  """Renames a stage folder to `<stage>.replaced-<time>` (nothing is deleted); returns the new
  path, None if there was no folder."""
  if not os.path.exists(stage_dir):
    return None
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  target = f"{stage_dir.rstrip(os.sep)}.replaced-{stamp}"
  suffix = 1
  while os.path.exists(target):
    target, suffix = f"{stage_dir.rstrip(os.sep)}.replaced-{stamp}-{suffix}", suffix + 1
  os.rename(stage_dir, target)
  return target


class StageLock:
  """An exclusive, non-blocking fcntl lock on `<workdir>/.<stage>.lock` naming its holder (host,
  pid, command, time). A second holder fails at once with StageInUseError naming the first.
  The lock lives as long as the open file: it dies with the process."""

  def __init__(self, stage_dir: str):
    stage_dir = os.path.abspath(stage_dir).rstrip(os.sep)
    self.stage_dir = stage_dir
    self.path = os.path.join(os.path.dirname(stage_dir), f".{os.path.basename(stage_dir)}.lock")
    self._file = None

  def __enter__(self) -> "StageLock":
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    f = open(self.path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        f.close()
        raise
      f.seek(0)
      holder = f.read().strip() or "{}"
      f.close()
      try:
        who = json.loads(holder)
        who = (f"process {who.get('pid')} on host {who.get('host')} (since {who.get('time')}: "
               f"{who.get('command')})")
      except json.JSONDecodeError:
        who = "another process"
      raise StageInUseError(
          f"{self.stage_dir} is being written by {who}. One run per stage folder: "
          "wait for it to finish (re-running afterwards resumes or reuses its results), stop "
          "it, or give this run another --workdir.") from None
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                        "time": datetime.datetime.now().isoformat(timespec="seconds"),
                        "command": " ".join(sys.argv)}))
    f.flush()
    self._file = f
    return self

  def __exit__(self, *exc) -> None:
    if self._file is not None:
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None
