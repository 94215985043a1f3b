"""Held-out evaluation during training: clips are run frame by frame as a tracker would
(`models.system.track_clip`), z_0 of frame t being the model's own prediction for frame t-1 (the
mean shape for frame 0), carried into frame t's crop with the loaders' crop matrices, and the
temporal carry passed along.

The crop of frame t comes from the *ground truth* of frame t-1 (the loaders' rule); the full
tracking protocol, whose crop follows the predictions, is `experiments/evaluate.py`'s job.
"""

from __future__ import annotations

from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rednet_jax.evaluation import metrics
from rednet_jax.models import conv
from rednet_jax.models.system import System, track_clip


def make_eval_step(model: System, mean_shape: np.ndarray, mesh: Mesh,
                   data_axis: str = "data", cpu_ynn_fusions: bool = False):
  """Returns jitted `eval_step(variables, batch) -> {'errors' (B, T), 'step_errors'
  (K + 1, B, T), 'valid' (B,), 'points' (K, B, T, L, 2), 'init_points' (B, T, L, 2)}` for the
  global batch (`track_clip`): the inter-ocular error of the last step per frame, of z_0 and
  of every step (refinement tables), and every step's shape (for refinement figures). With 68
  or 7 landmarks also 'errors_ip' (B, T): the inter-pupil error that 300-W papers report."""
  mean_shape = jnp.asarray(mean_shape, jnp.float32)
  with_ip = mean_shape.shape[-2] in metrics.EYE_BASED_COUNTS

  def eval_step(variables, batch):
    points, inits = track_clip(model, variables, model.normalise(batch["image"]), mean_shape,
                               batch.get("crop_matrix"))
    shapes = jnp.concatenate([inits[None], points])
    step_errors = metrics.normalised_errors(shapes, batch["landmarks"][None], "io")
    out = {"errors": step_errors[-1], "step_errors": step_errors, "valid": batch["valid"],
           "points": points, "init_points": inits}
    if with_ip:
      out["errors_ip"] = metrics.normalised_errors(points[-1], batch["landmarks"], "ip")
    return out

  # Outputs are gathered to every process (small), so any host can summarise and draw.
  replicated, by_batch = NamedSharding(mesh, P()), NamedSharding(mesh, P(data_axis))
  return jax.jit(eval_step, in_shardings=(replicated, by_batch), out_shardings=replicated,
                 compiler_options=conv.cpu_compiler_options(mesh.devices.flat[0].platform,
                                                            cpu_ynn_fusions))


def evaluate(eval_step, variables: Any, batches: Iterable[dict], to_global) -> tuple[dict, dict]:
  """Runs `eval_step` over `batches` (`to_global` turns a host batch into global arrays).
  Returns (metrics, details): details hold every valid frame's error and the first batch's
  images, landmarks and per-step shapes, for figures. With K > 1 spatial steps the metrics
  also hold `nme_io_step<k>`: the mean error of z_0 (k = 0) and of each step's shape; with 68
  or 7 landmarks, the inter-pupil summary (`nme_ip`, `fr10_ip`, ...) too."""
  errors, errors_ip, step_errors, details = [], [], [], {}
  for batch in batches:
    out = jax.device_get(eval_step(variables, to_global(batch)))
    valid = np.asarray(out["valid"])
    errors.append(np.asarray(out["errors"])[valid].reshape(-1))
    if "errors_ip" in out:
      errors_ip.append(np.asarray(out["errors_ip"])[valid].reshape(-1))
    step_errors.append(np.asarray(out["step_errors"])[:, valid].reshape(
        out["step_errors"].shape[0], -1))
    if not details:   # this process's clips come first in the global batch
      n = len(batch["image"])
      details = {"image": np.asarray(batch["image"]), "landmarks": np.asarray(batch["landmarks"]),
                 "points": out["points"][:, :n], "init_points": out["init_points"][:n]}
  if not errors:
    raise ValueError("the evaluation set is empty")
  details["errors"] = np.concatenate(errors)
  summary = metrics.summarise(details["errors"], "io")
  if errors_ip:
    summary.update(metrics.summarise(np.concatenate(errors_ip), "ip"))
  per_step = np.concatenate(step_errors, axis=1)                     # (K + 1, frames)
  if len(per_step) > 2:
    summary.update({f"nme_io_step{k}": 100 * float(e.mean()) for k, e in enumerate(per_step)})
  return summary, details
