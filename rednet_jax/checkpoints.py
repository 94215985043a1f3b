"""Orbax checkpoints of the curriculum stages and the hand-over from one stage to the next.

Every save and restore uses the PyTree handler: a manager fixes its handler type on first use,
and partial restore (a larger model restoring a smaller one's tree) needs `PyTreeRestore`.
"""

from __future__ import annotations

from typing import Any

import flax
import orbax.checkpoint as ocp


def checkpoint_manager(directory: str, max_to_keep: int = 3) -> ocp.CheckpointManager:
  """Keeps the newest `max_to_keep` steps; a save becomes visible only once complete, so an
  interrupted save never replaces the last good checkpoint."""
  return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=True), item_handlers=ocp.PyTreeCheckpointHandler())


def save(manager: ocp.CheckpointManager, step: int, tree: Any) -> None:
  manager.save(step, args=ocp.args.PyTreeSave(tree))
  manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, like: Any, step: int | None = None) -> Any:
  """Restores `step` (default: latest) into the structure, shapes and shardings of `like`."""
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"{manager.directory}: no complete checkpoint")
  return manager.restore(step, args=ocp.args.PyTreeRestore(
      item=like, restore_args=ocp.checkpoint_utils.construct_restore_args(like)))


def init_from_previous_stage(variables: dict[str, Any], previous_stage_dir: str
                             ) -> tuple[dict[str, Any], list[str]]:
  """`variables` ({'params', 'batch_stats'} of this stage's freshly initialised model) with
  every leaf that the previous stage's latest checkpoint also has taken from that checkpoint
  (parameters and BatchNorm statistics alike). Modules new in this stage keep their fresh
  init; their paths are returned. Shapes must agree leaf by leaf.

  The checkpoint must hold {'variables': {'params', 'batch_stats'}, ...} as the trainer saves.
  """
  manager = ocp.CheckpointManager(previous_stage_dir,
                                  item_handlers=ocp.PyTreeCheckpointHandler())
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"{previous_stage_dir}: no complete checkpoint of the previous "
                            "stage; train it first or point the config elsewhere")
  saved = manager.item_metadata(step)
  saved = saved.tree if hasattr(saved, "tree") else saved
  saved_flat = flax.traverse_util.flatten_dict(saved["variables"], sep="/")
  flat = flax.traverse_util.flatten_dict(variables, sep="/")
  for path, leaf in flat.items():
    if path in saved_flat and tuple(saved_flat[path].shape) != tuple(leaf.shape):
      raise ValueError(f"{previous_stage_dir}: {path} has shape {tuple(saved_flat[path].shape)}"
                       f" in the checkpoint, {tuple(leaf.shape)} in this model")
  target = {"variables": variables}
  restored = manager.restore(step, args=ocp.args.PyTreeRestore(
      item=target, partial_restore=True,
      restore_args=ocp.checkpoint_utils.construct_restore_args(target)))
  manager.close()
  fresh = sorted(p for p in flat if p not in saved_flat)
  return restored["variables"], fresh
