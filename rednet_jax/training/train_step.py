"""The sharded RED-Net training step: one jitted `train_step(state, batch, rng)` with the state
donated and explicit shardings over a `jax.sharding.Mesh`, returning a flat dict of metrics.

The batch is what the loaders ship (uint8 crops and coordinates); normalisation, z_0 and the
training targets are computed here, on the device. z_0 is the mean shape for the first frame of
every clip; for the others it is either the model's own prediction for the previous frame
(`init_from="prediction"`, what the paper's video stage describes and what tracking feeds at
test time; a forward pass without gradients, frame by frame, before the training pass) or the
previous frame's ground truth (`"ground_truth"`, teacher forcing, cheaper).
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rednet_jax.evaluation import metrics
from rednet_jax.models import conv
from rednet_jax.models.system import System, track_clip


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def make_optimizer(learning_rate: float = 0.01, momentum: float = 0.9, decay_rate: float = 0.8,
                   decay_every_steps: int = 1000, weight_decay: float = 0.0, name: str = "sgd",
                   schedule: str = "step"
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The paper's SGD: momentum 0.9, lr 0.01 multiplied by 0.8 every 10 epochs (pass
  decay_every_steps = 10 * steps_per_epoch); weight decay is a field (the paper gives none).
  name='adam' (momentum is then Adam's b1) is not the paper's: it is there for short CPU runs,
  where SGD at lr 0.01 needs far more steps than a few minutes give.

  schedule='plateau' (Belmonte et al.): a constant rate multiplied by `decay_rate` whenever the
  trainer's validation error stops improving (`update_plateau`; the multiplier lives in the
  optimiser state, so it is checkpointed with it)."""
  if schedule == "step":
    lr = optax.exponential_decay(learning_rate, decay_every_steps, decay_rate, staircase=True)
  elif schedule == "plateau":
    lr = optax.constant_schedule(learning_rate)
  else:
    raise ValueError(f"optimizer.schedule must be 'step' or 'plateau', got {schedule!r}")
  if name == "sgd":
    update = optax.sgd(lr, momentum=momentum)
  elif name == "adam":
    update = optax.adam(lr, b1=momentum)
  else:
    raise ValueError(f"optimizer.name must be 'sgd' (paper) or 'adam', got {name!r}")
  parts = [optax.add_decayed_weights(weight_decay) if weight_decay else optax.identity(), update]
  if schedule == "plateau":
    parts.append(_scale_by_plateau())
  return optax.chain(*parts), lr


def _scale_by_plateau() -> optax.GradientTransformation:
  """Multiplies updates by the plateau state's scale, which only `update_plateau` changes."""
  plateau = optax.contrib.reduce_on_plateau()

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u: state.scale * u, updates), state
  return optax.GradientTransformation(plateau.init, update)


def update_plateau(opt_state: Any, value: float, factor: float, patience: int) -> Any:
  """`opt_state` after one validation error `value`: optax's reduce-on-plateau rule (the
  scale times `factor` once `value` has not improved for `patience` calls in a row)."""
  plateau = optax.contrib.reduce_on_plateau(factor=factor, patience=patience,
                                            accumulation_size=1)
  _, state = plateau.update({}, opt_state[-1], value=jnp.asarray(value, jnp.float32))
  return (*opt_state[:-1], state)


def learning_rate_scale(opt_state: Any) -> jax.Array:
  """The plateau multiplier of an optimiser state (1 without a plateau schedule)."""
  last = opt_state[-1] if isinstance(opt_state, tuple) and opt_state else None
  if isinstance(last, optax.contrib.ReduceLROnPlateauState):
    return last.scale
  return jnp.ones(())


def initial_points(landmarks: jax.Array, mean_shape: jax.Array) -> jax.Array:
  """z_0 per frame: the mean shape for frame 0, the previous frame's landmarks afterwards."""
  first = jnp.broadcast_to(mean_shape, landmarks[:, :1].shape)
  return jnp.concatenate([first, landmarks[:, :-1]], axis=1)


def inter_ocular_nme(points: jax.Array, landmarks: jax.Array, valid: jax.Array,
                     frame_weights: jax.Array | None = None) -> jax.Array:
  """Mean inter-ocular NME over the frames of valid clips (and, when given, the frames with
  weight 1: those a system predicted), in % (`metrics`' definition)."""
  error = metrics.normalised_errors(points, landmarks, "io")
  weights = valid[:, None].astype(jnp.float32) * jnp.ones_like(error)
  if frame_weights is not None:
    weights = weights * frame_weights
  return 100 * jnp.sum(error * weights) / jnp.maximum(weights.sum(), 1.0)


def make_train_step(model: System, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, mean_shape: np.ndarray, mesh: Mesh, *,
                    loss_fields: dict[str, Any] | None = None, data_axis: str = "data",
                    state_sharding: Any = None,
                    init_from: str = "ground_truth", cpu_conv_gradients: bool = True,
                    cpu_ynn_fusions: bool = False):
  """Returns jitted `train_step(state, batch, rng) -> (state, metrics)` for any `System`:
  the loss is `model.loss(..., **loss_fields)` (the stage config's `loss` fields).

  `mean_shape` (L, 2) is in crop pixels (`data_pipelines.face_crops.mean_shape_in_crop`): z_0
  of every clip's first frame and the origin of f_REG's coordinates.

  batch: image uint8 (B, T, S, S, 3), landmarks float32 (B, T, L, 2), identity int32 (B,),
  valid bool (B,), with B sharded over `data_axis`; the state is donated, and replicated unless
  `state_sharding` (a tree of shardings matching the state, see `shard_state`) says otherwise.
  Clips with valid False add nothing to the losses, but their frames still enter the BN batch
  statistics (the loaders fill them with zeros). `cpu_conv_gradients=False` traces the step
  with XLA's own convolution gradients on CPU too, `cpu_ynn_fusions=True` compiles it with
  XLA:CPU's default YNNPACK fusions (`models.conv.cpu_compiler_options`).
  """
  if init_from not in ("ground_truth", "prediction"):
    raise ValueError(f"init_from must be 'ground_truth' or 'prediction', got {init_from!r}")
  loss_fields = dict(loss_fields or {})
  mean_shape = jnp.asarray(mean_shape, jnp.float32)

  def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array):
    frames = model.normalise(batch["image"])
    landmarks = batch["landmarks"]
    valid = batch["valid"]
    if init_from == "prediction" and frames.shape[1] > 1:
      _, init = jax.lax.stop_gradient(track_clip(
          model, {"params": state.params, "batch_stats": state.batch_stats}, frames, mean_shape,
          batch.get("crop_matrix")))
    else:
      init = initial_points(landmarks, mean_shape)

    def loss_fn(params):
      outputs, updates = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, frames, init, train=True,
          mutable=["batch_stats"], rngs={"dropout": rng})
      total, terms = model.loss(outputs, batch, mean_shape, valid.astype(jnp.float32),
                                **loss_fields)
      return total, (terms, outputs, updates["batch_stats"])

    (loss, (terms, outputs, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    measured = {"loss": loss, **{f"loss_{k}": v for k, v in terms.items()},
                "nme_io": inter_ocular_nme(outputs["points"][-1], landmarks, valid,
                                           outputs.get("frame_weights")),
                "grad_norm": optax.tree.norm(grads), "param_norm": optax.tree.norm(params),
                "learning_rate": schedule(state.step) * learning_rate_scale(state.opt_state),
                "valid_clips": valid.sum()}
    return TrainState(state.step + 1, params, batch_stats, opt_state), measured

  replicated = NamedSharding(mesh, P())
  by_batch = NamedSharding(mesh, P(data_axis))
  state_sharding = replicated if state_sharding is None else state_sharding
  step = train_step
  if not cpu_conv_gradients:
    def step(*args):   # the switch is read while the step is traced
      with conv.xla_conv_gradients():
        return train_step(*args)
  return jax.jit(step, in_shardings=(state_sharding, by_batch, replicated),
                 out_shardings=(state_sharding, replicated), donate_argnums=0,
                 compiler_options=conv.cpu_compiler_options(mesh.devices.flat[0].platform,
                                                            cpu_ynn_fusions))


def shard_state(state: Any, mesh: Mesh, mode: str, data_axis: str = "data") -> Any:
  """Shardings for a state tree. 'replicated': every device holds everything (data parallel).
  'fsdp': each array of 2+ dimensions is split over `data_axis` along its largest dimension
  that divides evenly (ZeRO-3 style; XLA gathers weights where they are used), for models or
  optimiser states that do not fit on one device."""
  if mode == "replicated":
    return jax.tree.map(lambda _: NamedSharding(mesh, P()), state)
  if mode != "fsdp":
    raise ValueError(f"mesh.state_sharding must be 'replicated' or 'fsdp', got {mode!r}")
  n = mesh.shape[data_axis]

  def spec(leaf):
    shape = np.shape(leaf)
    dims = sorted((d for d in range(len(shape)) if shape[d] % n == 0 and shape[d] >= n),
                  key=lambda d: -shape[d])
    if len(shape) < 2 or not dims:
      return NamedSharding(mesh, P())
    axes = [None] * len(shape)
    axes[dims[0]] = data_axis
    return NamedSharding(mesh, P(*axes))
  return jax.tree.map(spec, state)
