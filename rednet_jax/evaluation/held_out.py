"""Held-out evaluation during training: clips are run frame by frame as a tracker would, z_0 of
frame t being the model's own prediction for frame t-1 (the mean shape for frame 0), carried
into frame t's crop with the loaders' crop matrices, and the LSTM carry passed along.

The crop of frame t comes from the *ground truth* of frame t-1 (the loaders' rule); the full
tracking protocol, whose crop follows the predictions, is `experiments/evaluate.py`'s job.
"""

from __future__ import annotations

from typing import Any, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rednet_jax.evaluation import metrics

def _affine(matrix: jax.Array, points: jax.Array) -> jax.Array:
  return points @ matrix[..., :2].swapaxes(-1, -2) + matrix[..., None, :, 2]


def _invert_affine(matrix: jax.Array) -> jax.Array:
  linear = jnp.linalg.inv(matrix[..., :2])
  return jnp.concatenate([linear, -(linear @ matrix[..., 2:])], axis=-1)


def track_clip(model: nn.Module, variables: Any, frames: jax.Array, mean_shape: jax.Array,
               matrices: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Runs normalised clips (B, T, S, S, 3) frame by frame in eval mode: z_0 of frame 0 is the
  mean shape, of frame t the last step's shape for frame t-1 moved into frame t's crop with the
  crop matrices (B, T, 2, 3) (None: all frames share one coordinate frame); the LSTM carry is
  passed along. Returns (every step's shape (K, B, T, L, 2), the z_0 used (B, T, L, 2))."""
  b, t = frames.shape[:2]
  if matrices is None:
    matrices = jnp.broadcast_to(jnp.eye(2, 3), (b, t, 2, 3))
  previous_matrices = jnp.concatenate([matrices[:, :1], matrices[:, :-1]], axis=1)
  mean_shape = jnp.broadcast_to(jnp.asarray(mean_shape, jnp.float32), (b, *mean_shape.shape))

  def frame_step(state, inputs):
    carry, previous, first = state
    frame, previous_matrix, matrix = inputs
    # Previous prediction: its crop -> video pixels -> this frame's crop.
    carried = _affine(matrix, _affine(_invert_affine(previous_matrix), previous))
    init = jnp.where(first, mean_shape, carried)
    outputs = model.apply(variables, frame[:, None], init[:, None], carry, train=False)
    points = outputs["points"][:, :, 0]                               # (K, B, L, 2)
    return (outputs["carry"], points[-1], False), (points, init)

  state = (model.initial_carry(b), mean_shape, True)
  _, (points, inits) = jax.lax.scan(frame_step, state, jax.tree.map(
      lambda a: a.swapaxes(0, 1), (frames, previous_matrices, matrices)))
  return points.transpose(1, 2, 0, 3, 4), inits.swapaxes(0, 1)


def make_eval_step(model: nn.Module, mean_shape: np.ndarray, mesh: Mesh,
                   data_axis: str = "data"):
  """Returns jitted `eval_step(variables, batch) -> {'errors' (B, T), 'valid' (B,),
  'points' (K, B, T, L, 2), 'init_points' (B, T, L, 2)}` for the global batch (`track_clip`):
  the inter-ocular error of the last step per frame, and every step's shape (for refinement
  figures)."""
  from rednet_jax.training.train_step import normalise_images  # pylint: disable=g-import-not-at-top
  mean_shape = jnp.asarray(mean_shape, jnp.float32)

  def eval_step(variables, batch):
    points, inits = track_clip(model, variables, normalise_images(batch["image"]), mean_shape,
                               batch.get("crop_matrix"))
    return {"errors": metrics.normalised_errors(points[-1], batch["landmarks"], "io"),
            "valid": batch["valid"], "points": points, "init_points": inits}

  # Outputs are gathered to every process (small), so any host can summarise and draw.
  replicated, by_batch = NamedSharding(mesh, P()), NamedSharding(mesh, P(data_axis))
  return jax.jit(eval_step, in_shardings=(replicated, by_batch), out_shardings=replicated)


def evaluate(eval_step, variables: Any, batches: Iterable[dict], to_global) -> tuple[dict, dict]:
  """Runs `eval_step` over `batches` (`to_global` turns a host batch into global arrays).
  Returns (metrics, details): details hold every valid frame's error and the first batch's
  images, landmarks and per-step shapes, for figures."""
  errors, details = [], {}
  for batch in batches:
    out = jax.device_get(eval_step(variables, to_global(batch)))
    errors.append(np.asarray(out["errors"])[np.asarray(out["valid"])].reshape(-1))
    if not details:   # this process's clips come first in the global batch
      n = len(batch["image"])
      details = {"image": np.asarray(batch["image"]), "landmarks": np.asarray(batch["landmarks"]),
                 "points": out["points"][:, :n], "init_points": out["init_points"][:n]}
  if not errors:
    raise ValueError("the evaluation set is empty")
  details["errors"] = np.concatenate(errors)
  return metrics.summarise(details["errors"], "io"), details
