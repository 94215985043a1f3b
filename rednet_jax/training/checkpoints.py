"""Orbax checkpoints of the curriculum stages and the hand-over from one stage to the next.

A checkpoint step holds two items: `state` (a PyTree: {'variables': {'params', 'batch_stats'},
'opt_state', 'step', ...}) and, when given, `data` (the Grain iterator's position, one JSON
file per process), so a resumed run sees the same batches. Every PyTree save and restore uses the
PyTree handler: a manager fixes its handler type on first use, and partial restore (a larger
model restoring a smaller one's tree) needs `PyTreeRestore`.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import flax
import grain
import jax
import numpy as np
import orbax.checkpoint as ocp


def checkpoint_manager(directory: str, max_to_keep: int = 3) -> ocp.CheckpointManager:
  """Keeps the newest `max_to_keep` steps. A save is written to a temporary folder and renamed
  when complete, so a save interrupted (even by kill -9) never replaces the last good
  checkpoint; the leftover temporary folder is removed the next time a manager opens."""
  return ocp.CheckpointManager(
      directory,
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           cleanup_tmp_directories=True),
      item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                     "data": grain.checkpoint.CheckpointHandler()})


def save(manager: ocp.CheckpointManager, step: int, tree: Any, data_iterator=None) -> None:
  items = {"state": ocp.args.PyTreeSave(tree)}
  if data_iterator is not None:
    items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
  manager.save(step, args=ocp.args.Composite(**items))
  manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, like: Any, step: int | None = None,
            data_iterator=None) -> Any:
  """Restores `step` (default: latest) into the structure, shapes and shardings of `like`;
  `data_iterator`, when given, is moved to the saved position."""
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"{manager.directory}: no complete checkpoint")
  items = {"state": ocp.args.PyTreeRestore(
      item=like, restore_args=ocp.checkpoint_utils.construct_restore_args(like))}
  if data_iterator is not None:
    items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
  return manager.restore(step, args=ocp.args.Composite(**items))["state"]


def _adapt_per_step_statistics(saved: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
  """BatchNorm running statistics kept per spatial step (leading axis K) for a model with
  another K, or shared ones for a per-step model and back; None when `shape` is not such a
  change. Rule: steps the previous stage had keep their statistics; every new step starts from
  those of the last step it trained (the one closest to a converged response); shared
  statistics seed every step, and a shared model takes the last step's."""
  if saved.ndim == len(shape) and saved.shape[1:] == shape[1:]:
    k = shape[0]
    if k <= saved.shape[0]:
      return saved[:k]
    return np.concatenate([saved, np.repeat(saved[-1:], k - saved.shape[0], axis=0)])
  if saved.ndim + 1 == len(shape) and saved.shape == shape[1:]:
    return np.broadcast_to(saved, shape).copy()
  if saved.ndim == len(shape) + 1 and saved.shape[1:] == shape:
    return saved[-1]
  return None


def init_from_previous_stage(variables: dict[str, Any], previous_stage_dir: str,
                             keep_fresh: Sequence[str] = ()) -> tuple[dict[str, Any], list[str]]:
  """`variables` ({'params', 'batch_stats'} of this stage's freshly initialised model) with
  every leaf that the previous stage's latest checkpoint also has taken from that checkpoint
  (parameters and BatchNorm statistics alike). Modules new in this stage, and leaves whose path
  (e.g. `params/identity/logits/kernel`) matches a regex of `keep_fresh` (a classifier whose
  classes changed), keep their fresh init; their paths are returned. BatchNorm statistics
  kept per spatial step follow a change of K (`_adapt_per_step_statistics`); any other shape
  must agree leaf by leaf (ConfigError naming the leaf otherwise)."""
  from rednet_jax.training.configs import ConfigError  # pylint: disable=g-import-not-at-top
  manager = checkpoint_manager(previous_stage_dir)
  step = manager.latest_step()
  if step is None:
    raise ConfigError(f"init_from: {previous_stage_dir} holds no complete checkpoint of the "
                      "previous stage; train that stage first or point init_from elsewhere")
  saved = manager.item_metadata(step)["state"]
  saved = saved.tree if hasattr(saved, "tree") else saved
  saved_flat = flax.traverse_util.flatten_dict(saved["variables"], sep="/")
  flat = flax.traverse_util.flatten_dict(variables, sep="/")
  saved_flat = {p: v for p, v in saved_flat.items()
                if not any(re.fullmatch(pattern, p) for pattern in keep_fresh)}
  adapted = set()
  for path, leaf in flat.items():
    if path not in saved_flat or tuple(saved_flat[path].shape) == tuple(leaf.shape):
      continue
    saved_shape = tuple(saved_flat[path].shape)
    if path.startswith("batch_stats/") and _adapt_per_step_statistics(
        np.zeros(saved_shape, np.float32), tuple(leaf.shape)) is not None:
      adapted.add(path)
      continue
    raise ConfigError(
        f"init_from: {path} has shape {saved_shape} in {previous_stage_dir} and "
        f"{tuple(leaf.shape)} in this stage's model: the model fields that size it (width, "
        "num_landmarks, lstm_hidden, data.size for the regression head, ...) must match the "
        "previous stage's, or add a regex matching the leaf to init_keep_fresh to start it "
        "fresh")
  shared = flax.traverse_util.unflatten_dict(
      {p: (np.zeros(saved_flat[p].shape, saved_flat[p].dtype) if p in adapted else v)
       for p, v in flat.items() if p in saved_flat}, sep="/")
  target = {"variables": shared}
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=target, partial_restore=True,
      restore_args=ocp.checkpoint_utils.construct_restore_args(target))))["state"]
  manager.close()
  restored_flat = flax.traverse_util.flatten_dict(restored["variables"], sep="/")
  for path in adapted:
    restored_flat[path] = jax.numpy.asarray(_adapt_per_step_statistics(
        np.asarray(restored_flat[path]), tuple(flat[path].shape)))
  merged = {**flat, **restored_flat}
  fresh = sorted(p for p in flat if p not in saved_flat)
  return flax.traverse_util.unflatten_dict(merged, sep="/"), fresh


def restore_leaves(checkpoint_dir: str, keys: Sequence[str] = ("variables", "mean_shape"),
                   step: int | None = None) -> dict[str, Any]:
  """The top-level entries `keys` of a training checkpoint's state as numpy arrays, without
  building the model or optimiser (for export and inference). Default: the latest step."""
  manager = checkpoint_manager(checkpoint_dir)
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"{checkpoint_dir}: no complete checkpoint")
  saved = manager.item_metadata(step)["state"]
  saved = saved.tree if hasattr(saved, "tree") else saved
  missing = [k for k in keys if k not in saved]
  if missing:
    raise KeyError(f"{checkpoint_dir} step {step}: no {missing} in the checkpoint")
  target = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), {k: saved[k] for k in keys})
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=target, partial_restore=True,
      restore_args=ocp.checkpoint_utils.construct_restore_args(target))))["state"]
  manager.close()
  return {"step": step, **jax.tree.map(np.asarray, restored)}
