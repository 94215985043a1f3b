"""The interface every landmark system implements, and the frame-by-frame rollout built on it.

A system is a Flax module (one file under `rednet_jax/models/`, registered in `MODELS`) that
subclasses `System`. The trainer, held-out evaluation, `experiments/evaluate.py`, `Tracker`,
`predict.py`, `track.py`, `export.py` and the notebook use only what is declared here:

  __call__(frames, init_points, carry=None, *, train=False) -> outputs dict
      frames (B, T, H, W, 3) as `normalise` returns them; init_points z_0 (B, T, L, 2) in input
      pixels (x, y): the mean shape for an image, the previous frame's shape when tracking. Every
      system renders its own feedback from z_0 (v1: a label map, v2: 7 detection disks; the
      local-motion models take none).
      outputs["points"] (K, B, T, L, 2): the shape after each of the K spatial steps (the last
      is the prediction; earlier ones are for refinement figures); outputs["carry"]: the
      temporal state to pass with the next chunk of the same videos (None without one);
      optional outputs["frame_weights"] (B, T): 0 for frames the system made no prediction for
      in training (the local-motion models' window history), left out of training metrics;
      optional outputs["initial_points"] (B, T, L, 2): the shape the steps start from when the
      system picks it rather than taking z_0 (DRR's k-means candidate; per-step tables); other
      keys are the system's own (response maps, head outputs) and feed its `loss`.
  init_variables(frames, init_points, seed) -> variables   the system's own initialisation
                                 (provided by `System`, jitted; what the trainer starts from)
  initial_carry(batch_size)      the temporal state at the start of a video (None: stateless)
  normalise(images uint8)        the system's input convention
  loss(outputs, batch, mean_shape, clip_weights, **config.loss) -> (total, {term: value})
  confidence(outputs) -> (B, T)  how sure the last step is that a face is there, in [0, 1]
                                 (the Tracker re-detects below a threshold)
  step_maps(outputs) -> (K, B, T, h, w)  one image per spatial step of how strongly any landmark
                                 responds, in [0, 1] (for figures)
  load_pretrained(variables, path) -> variables   ImageNet initialisation (`config.pretrained_weights`)
  fit_to_shapes(variables, shapes, seed) -> variables   state fitted to the training shapes
                                 (n, L, 2) in crop pixels before the first step (DRR's k-means
                                 candidates; the others return the variables unchanged)
  config_problems(model, loss) -> [(field, rule)]  checks of `config.model` / `config.loss`
  readout / readout_window       fields that change how landmarks are read out, not the weights:
                                 a loaded model may take other values (export.py --readout)
  inference_overrides            field values for inference (training-only heads off) ...
  training_only_modules          ... and the top-level variable subtrees those heads own
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rednet_jax.models.readout import apply_affine

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # RGB, images in [0, 1]
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


class Problems(list):
  """The (field, rule) list `System.config_problems` returns, filled by `need`."""

  def need(self, ok: bool, field: str, rule: str) -> None:
    if not ok:
      self.append((field, rule))


def parameter_count(tree: Any) -> int:
  """Number of scalars in a variable tree (e.g. `variables["params"]`)."""
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def imagenet_normalise(images: jax.Array) -> jax.Array:
  """uint8 RGB -> ImageNet mean/std on [0, 1] (the torchvision convention)."""
  return (images.astype(jnp.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def unit_normalise(images: jax.Array) -> jax.Array:
  """uint8 RGB -> [0, 1] without mean/std (the RED-Net v2 authors' released code)."""
  return images.astype(jnp.float32) / 255.0


INPUT_NORMALISATIONS = {"imagenet": imagenet_normalise, "unit": unit_normalise}


class System(nn.Module):
  """Base of every system; see the module docstring for the contract."""

  # Class attributes, not dataclass fields (no annotations): see the module docstring.
  readout_fields = ("readout", "readout_window")
  inference_overrides = {}
  training_only_modules = ()

  def init_variables(self, frames: jax.Array, init_points: jax.Array, seed: int = 0,
                     out_shardings: Any = None) -> dict[str, Any]:
    """The system's own initialisation for inputs shaped like `frames` / `init_points`.
    "rbg" keys: XLA:CPU compiles this program (random draws only; the forward pass is dead
    code) 2-4x faster than with threefry keys (v1 at test size 30.8 s -> 7.2 s, v2 ResNet-50
    30.3 s -> 15.7 s); only the initial draw depends on the choice."""
    init = jax.jit(lambda r: self.init({"params": r, "dropout": r}, frames, init_points),
                   out_shardings=out_shardings)
    return init(jax.random.key(seed, impl="rbg"))

  def initial_carry(self, batch_size: int) -> Any:
    raise NotImplementedError

  def normalise(self, images: jax.Array) -> jax.Array:
    raise NotImplementedError

  def loss(self, outputs: dict[str, Any], batch: dict[str, jax.Array], mean_shape: jax.Array,
           clip_weights: jax.Array | None = None, **loss_fields) -> tuple[jax.Array, dict]:
    raise NotImplementedError

  def confidence(self, outputs: dict[str, Any]) -> jax.Array:
    raise NotImplementedError

  def step_maps(self, outputs: dict[str, Any]) -> jax.Array:
    raise NotImplementedError

  def fit_to_shapes(self, variables: dict[str, Any], shapes: np.ndarray, seed: int = 0
                    ) -> dict[str, Any]:
    return variables

  def load_pretrained(self, variables: dict[str, Any], path: str) -> dict[str, Any]:
    raise NotImplementedError(f"{type(self).__name__} has no ImageNet initialisation")

  @classmethod
  def config_problems(cls, model: Mapping[str, Any], loss: Mapping[str, Any]
                      ) -> list[tuple[str, str]]:
    return []


def scan_steps(parent: nn.Module, step_cls: type[nn.Module], step_fields: dict[str, Any],
               length: int, unroll: int, name: str, share_params: bool = True,
               num_broadcast: int = 1):
  """The spatial recurrence: `step_cls(**step_fields)` applied `length` times by `nn.scan`, its
  parameters shared across steps (recurrent) or one set per step (`share_params=False`: a
  cascade of separately weighted networks), BatchNorm running statistics one set per step
  (leading axis K). Call it inside `parent`'s compact method as fn(carry, xs, *broadcast): xs
  is scanned, the `num_broadcast` other arguments are the same for every step. One
  step runs outside `nn.scan` (with the same variable tree): XLA:CPU ran the convolution
  gradients of a length-1 scan ~8x slower than the same ops outside it."""
  if length == 1:
    per_step = ("batch_stats",) if share_params else ("params", "batch_stats")
    mapped = nn.map_variables(
        step_cls, per_step, init=parent.is_initializing(),
        mutable=parent.is_mutable_collection("batch_stats"),
        trans_in_fn=lambda v: jax.tree.map(lambda a: a[0], v),
        trans_out_fn=lambda v: jax.tree.map(lambda a: a[None], v))
    step = mapped(**step_fields, name=name)

    def run_one(carry, xs, *broadcast):
      carry, ys = step(carry, jax.tree.map(lambda a: a[0], xs), *broadcast)
      return carry, jax.tree.map(lambda a: a[None], ys)
    return run_one
  axes = {"batch_stats": 0} if share_params else {"params": 0, "batch_stats": 0}
  scan = nn.scan(step_cls, variable_broadcast="params" if share_params else False,
                 variable_axes=axes, split_rngs={"params": not share_params},
                 in_axes=(0,) + (nn.broadcast,) * num_broadcast, length=length, unroll=unroll)
  return scan(**step_fields, name=name)


def check_inputs(frames: jax.Array, init_points: jax.Array, num_landmarks: int
                 ) -> tuple[int, int, int, int]:
  """Checks frames (B, T, H, W, 3) with H, W divisible by 32 (five halvings) and z_0
  (B, T, L, 2); returns (B, T, H, W)."""
  if frames.ndim != 5 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be (B, T, H, W, 3), got {frames.shape}")
  b, t, h, w, _ = frames.shape
  if h % 32 or w % 32:
    raise ValueError(f"input size {(h, w)} must be divisible by 32 (five halvings)")
  if init_points.shape != (b, t, num_landmarks, 2):
    raise ValueError(f"init_points must be {(b, t, num_landmarks, 2)}, got {init_points.shape}")
  return b, t, h, w


def clip_mean(per_clip: jax.Array, clip_weights: jax.Array | None) -> jax.Array:
  """Mean of per-clip loss terms over the clips with weight 1 (all clips when None)."""
  if clip_weights is None:
    return per_clip.mean()
  return jnp.sum(per_clip * clip_weights) / jnp.maximum(jnp.sum(clip_weights), 1.0)


def _invert_affine(matrix: jax.Array) -> jax.Array:
  linear = jnp.linalg.inv(matrix[..., :2])
  return jnp.concatenate([linear, -(linear @ matrix[..., 2:])], axis=-1)


def track_clip(model: System, variables: Any, frames: jax.Array, mean_shape: jax.Array,
               matrices: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Runs normalised clips (B, T, S, S, 3) frame by frame in eval mode, as a tracker would: z_0
  of frame 0 is the mean shape, of frame t the last step's shape for frame t-1 moved into frame
  t's crop with the crop matrices (B, T, 2, 3) (None: all frames share one coordinate frame);
  the temporal carry is passed along. Returns (every step's shape (K, B, T, L, 2), the shape
  the steps started from (B, T, L, 2): z_0, or the system's `initial_points` output when it
  has one)."""
  b, t = frames.shape[:2]
  if matrices is None:
    matrices = jnp.broadcast_to(jnp.eye(2, 3), (b, t, 2, 3))
  previous_matrices = jnp.concatenate([matrices[:, :1], matrices[:, :-1]], axis=1)
  mean_shape = jnp.broadcast_to(jnp.asarray(mean_shape, jnp.float32), (b, *mean_shape.shape))

  def frame_step(state, inputs):
    carry, previous, first = state
    frame, previous_matrix, matrix = inputs
    # Previous prediction: its crop -> video pixels -> this frame's crop.
    carried = apply_affine(matrix, apply_affine(_invert_affine(previous_matrix), previous))
    init = jnp.where(first, mean_shape, carried)
    outputs = model.apply(variables, frame[:, None], init[:, None], carry, train=False)
    points = outputs["points"][:, :, 0]                               # (K, B, L, 2)
    # A system that picks its own start (DRR's k-means candidate) reports it.
    start = outputs["initial_points"][:, 0] if "initial_points" in outputs else init
    return (outputs["carry"], points[-1], False), (points, start)

  state = (model.initial_carry(b), mean_shape, True)
  _, (points, inits) = jax.lax.scan(frame_step, state, jax.tree.map(
      lambda a: a.swapaxes(0, 1), (frames, previous_matrices, matrices)))
  return points.transpose(1, 2, 0, 3, 4), inits.swapaxes(0, 1)
