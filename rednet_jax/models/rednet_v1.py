"""RED-Net v1 (Peng et al., ECCV 2016): recurrent encoder-decoder for sequential face alignment.

One definition for the three curriculum stages; heads are switched on by fields, parameter names
never change, so a later stage restores an earlier stage's tree and adds its new modules:

  image stage     use_temporal=False  use_identity=False  (use_shape_regression as configured)
  identity stage  use_temporal=False  use_identity=True
  video stage     use_temporal=True   use_identity=True

Data flow for a clip x (B, T, H, W, 3) and initial shapes z_0 (B, T, L, 2):

  for k in 1..K (nn.scan, shared weights):
    label map of the current shape, square side sizes[k-1] -> concat with x -> f_ENC
    bottleneck split into C_id | C_pe; C_pe <- f_tRNN(C_pe) (LSTM over T, carry from the
    previous chunk)
    f_DENC -> (L+1)-channel logits -> argmax clusters -> new shape (f_sRNN)
  f_CLS(C_id of step K), f_REG(softmax of step K, encoder conv2_2/conv4_3 of step K)

Frames of a clip go through the convolutions as one batch (B*T); only the bottleneck LSTM is
sequential in time. z_0 is given per frame: the mean shape for images, the previous frame's shape
for video (the tracker feeds its own previous prediction frame by frame; training feeds what the
training config chooses).

Choices where the paper is silent (each a field, the paper's setting where it has one):
- The label map enters the encoder as one channel scaled to [0, 1] (label / L).
- The square sizes are those of the map *fed into* steps 1, 2, 3 (7, 5, 3 px), so every size is
  used with K = 3; the last size repeats for K > 3.
- Each spatial step runs its own LSTM chain over time (same weights); the temporal carry holds
  one (c, h) per step.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from rednet_jax.models.readout import read_landmarks
from rednet_jax.models.targets import render_label_map, square_size_for_step
from rednet_jax.models.losses import rednet_v1_loss
from rednet_jax.models.readout import READOUTS
from rednet_jax.models.system import System, check_inputs, imagenet_normalise
from rednet_jax.models.heads import IdentityHead, LSTMCarry, ShapeRegressionHead, TemporalLSTM, zero_lstm_carry
from rednet_jax.models.layers import scaled_channels
from rednet_jax.models.vgg import VGG16_STAGES, VGG16Decoder, VGG16Encoder

Dtype = Any


class SpatialStep(nn.Module):
  """One pass of f_ENC -> (f_tRNN) -> f_DENC -> f_sRNN; the body of the spatial `nn.scan`.

  carry: (points (B, T, L, 2), features of the last step for the heads)
  xs: (square side for this step, LSTM carry of this step's temporal chain)
  """
  num_landmarks: int
  width: float
  use_temporal: bool
  temporal_residual: bool
  lstm_hidden: int
  max_square: int
  readout: str
  readout_window: int
  bn_momentum: float
  dtype: Dtype
  train: bool

  @nn.compact
  def __call__(self, carry, xs, frames: jax.Array):
    points, _ = carry
    square, lstm_carry = xs
    b, t, h, w, _ = frames.shape
    label_map = render_label_map(jax.lax.stop_gradient(points), (h, w), square, self.max_square)
    label_channel = (label_map.astype(frames.dtype) / self.num_landmarks)[..., None]
    x = jnp.concatenate([frames, label_channel], axis=-1).reshape(b * t, h, w, -1)
    code, indices, kept = VGG16Encoder(self.width, self.bn_momentum, self.dtype,
                                       name="encoder")(x.astype(self.dtype), self.train)
    identity_code, pose_code = jnp.split(code, 2, axis=-1)
    if self.use_temporal:
      pose_code, lstm_carry = TemporalLSTM(self.lstm_hidden, self.temporal_residual,
                                           name="temporal")(
          pose_code.reshape(b, t, *pose_code.shape[1:]), lstm_carry)
      pose_code = pose_code.reshape(b * t, *pose_code.shape[2:])
    decoded = VGG16Decoder(self.num_landmarks + 1, self.width, self.bn_momentum, self.dtype,
                           name="decoder")(jnp.concatenate([identity_code, pose_code], -1),
                                           indices, self.train)
    logits = decoded.astype(jnp.float32).reshape(b, t, h, w, -1)
    new_points = jax.lax.stop_gradient(
        read_landmarks(logits, points, self.readout, self.readout_window))
    head_features = {"identity_code": identity_code, **kept}
    return (new_points, head_features), (logits, new_points, lstm_carry)


class RedNetV1(System):
  """RED-Net v1. See the module docstring; fields are the config's `model.*`."""
  num_landmarks: int = 68
  width: float = 1.0                      # channel multiplier; 1.0 = VGG-16
  num_steps: int = 3                      # K spatial recurrent steps (paper: 3)
  feedback_squares: tuple[int, ...] = (7, 5, 3)
  # nn.scan unroll; = num_steps for CPU training (docs/engineering_notes.md)
  scan_unroll: int = 1
  # nn.remat per spatial step: its activations are recomputed in the backward pass instead of
  # stored (accelerator memory for larger batches); the same function.
  remat_steps: bool = False
  bn_stats_per_step: bool = True          # own BN running statistics per spatial step
  use_temporal: bool = False              # f_tRNN
  temporal_residual: bool = False         # f_tRNN output added to C_pe (paper: replaces it)
  lstm_hidden: int = 256
  use_identity: bool = False              # f_CLS
  num_identities: int = 0
  use_shape_regression: bool = False      # f_REG
  dropout_rate: float = 0.4
  bn_momentum: float = 0.99
  # Landmarks from each step's response: the paper's argmax-cluster centre, or the sub-pixel
  # probability-weighted centroid in a readout_window-px square around it (feedback.READOUTS).
  readout: str = "cluster_centroid"
  readout_window: int = 7
  dtype: Dtype = jnp.float32              # compute dtype of convolutions (bfloat16 on TPU/GPU)

  # f_CLS and f_REG are training devices: landmarks are read from the responses.
  inference_overrides = {"use_identity": False, "num_identities": 0,
                         "use_shape_regression": False, "dropout_rate": 0.0}
  training_only_modules = ("identity", "shape")

  def normalise(self, images: jax.Array) -> jax.Array:
    return imagenet_normalise(images)   # the encoder is ImageNet VGG-16's

  def loss(self, outputs, batch, mean_shape, clip_weights=None, *, target_square: int = 3,
           weights: Mapping[str, float] | None = None):
    """`losses.rednet_v1_loss`: response cross-entropy against `target_square` label maps,
    f_REG and f_CLS terms when present, weighted by `weights` (response, shape, identity)."""
    return rednet_v1_loss(outputs, batch, mean_shape, target_square, dict(weights or {}),
                          clip_weights)

  def confidence(self, outputs: dict[str, Any]) -> jax.Array:
    """Mean over landmarks of each landmark channel's peak softmax probability in the last
    step's response (channel 0 is background); (B, T)."""
    probabilities = jax.nn.softmax(outputs["logits"][-1].astype(jnp.float32), axis=-1)[..., 1:]
    return probabilities.max(axis=(-3, -2)).mean(axis=-1)

  def step_maps(self, outputs: dict[str, Any]) -> jax.Array:
    """Each step's highest landmark probability per pixel (K, B, T, H, W)."""
    return jax.nn.softmax(outputs["logits"].astype(jnp.float32), axis=-1)[..., 1:].max(-1)

  def load_pretrained(self, variables, path):
    from rednet_jax.models.pretrained import load_vgg16_into_encoder  # pylint: disable=g-import-not-at-top
    return load_vgg16_into_encoder(variables, path)

  @classmethod
  def config_problems(cls, model: Mapping[str, Any], loss: Mapping[str, Any]
                      ) -> list[tuple[str, str]]:
    problems = []
    for field in ("num_steps", "scan_unroll", "lstm_hidden"):
      if not (isinstance(model[field], int) and model[field] >= 1):
        problems.append((f"model.{field}", "must be a positive integer"))
    if not model["width"] > 0:
      problems.append(("model.width", "must be > 0"))
    if model["readout"] not in READOUTS:
      problems.append(("model.readout", f"must be one of {list(READOUTS)}"))
    window = model["readout_window"]
    if not (isinstance(window, int) and window >= 1 and window % 2 == 1):
      problems.append(("model.readout_window", "must be an odd positive number of pixels"))
    squares = model["feedback_squares"]
    if not (len(squares) > 0 and all(isinstance(s, int) and s >= 1 and s % 2 for s in squares)):
      problems.append(("model.feedback_squares", "must be odd positive square sides, e.g. (7, 5, 3)"))
    if not (isinstance(loss.get("target_square", 3), int) and loss.get("target_square", 3) >= 1):
      problems.append(("loss.target_square", "must be a positive integer"))
    return problems

  def initial_carry(self, batch_size: int) -> LSTMCarry | None:
    """Temporal carry at the start of a video: one zero LSTM state per spatial step."""
    if not self.use_temporal:
      return None
    return zero_lstm_carry((self.num_steps, batch_size), self.lstm_hidden)

  @nn.compact
  def __call__(self, frames: jax.Array, init_points: jax.Array, carry: LSTMCarry | None = None,
               *, train: bool = False) -> dict[str, Any]:
    """frames (B, T, H, W, 3) normalised images; init_points (B, T, L, 2) z_0 as (x, y) pixels.

    Returns a dict:
      logits  (K, B, T, H, W, L+1) response logits of every spatial step (float32)
      points  (K, B, T, L, 2) shape read out of each step's response (the feedback)
      carry   temporal carry to pass with the next chunk of the same videos (None w/o f_tRNN)
      identity_logits (B, T, N)        when use_identity
      shape_residual  (B, T, L, 2)     when use_shape_regression: f_REG output, coordinates
                                       minus the mean shape, divided by the input size
    """
    b, t, h, w = check_inputs(frames, init_points, self.num_landmarks)
    if scaled_channels(VGG16_STAGES[4][-1], self.width) % 2:
      raise ValueError(f"width {self.width} gives an odd bottleneck; C_id | C_pe need an even one")
    if self.use_identity and self.num_identities < 1:
      raise ValueError("use_identity needs num_identities >= 1")
    k = self.num_steps
    if carry is None:
      carry = self.initial_carry(b)
    lstm_carries = carry if self.use_temporal else zero_lstm_carry((k, 0), 0)
    squares = jnp.array(self.square_sizes(), jnp.int32)

    step_fields = self._step_fields(train)
    head_features = self._zero_head_features(b * t, h, w)
    init_carry = (init_points.astype(jnp.float32), head_features)
    spatial_step = nn.remat(SpatialStep) if self.remat_steps else SpatialStep
    if k == 1:
      # No scan for one step: XLA:CPU ran the convolution gradients of a length-1 scan ~8x
      # slower than the same ops outside it, unrolled or not (train step 23 s vs 3 s at width
      # 0.25, 128 px, T=10). Per-step BN statistics keep their leading axis of 1.
      step_cls = spatial_step
      if self.bn_stats_per_step:
        step_cls = nn.map_variables(
            SpatialStep, "batch_stats", init=self.is_initializing(),
            mutable=self.is_mutable_collection("batch_stats"),
            trans_in_fn=lambda v: jax.tree.map(lambda a: a[0], v),
            trans_out_fn=lambda v: jax.tree.map(lambda a: a[None], v))
      (_, head_features), ys = step_cls(**step_fields, name="spatial")(
          init_carry, jax.tree.map(lambda a: a[0], (squares, lstm_carries)), frames)
      logits, points, lstm_out = jax.tree.map(lambda a: a[None], ys)
    elif self.bn_stats_per_step:
      scan = nn.scan(spatial_step, variable_broadcast="params", variable_axes={"batch_stats": 0},
                     split_rngs={"params": False}, in_axes=(0, nn.broadcast), length=k,
                     unroll=self.scan_unroll)
      (_, head_features), (logits, points, lstm_out) = scan(**step_fields, name="spatial")(
          init_carry, (squares, lstm_carries), frames)
    elif self.is_initializing():
      # Shared BN statistics are a scan *carry*; flax cannot create a carried variable inside the
      # loop, so init runs the same module K times in Python: the variable tree is identical.
      step = spatial_step(**step_fields, name="spatial")
      state, ys = init_carry, []
      for i in range(k):
        state, y = step(state, jax.tree.map(lambda a: a[i], (squares, lstm_carries)), frames)
        ys.append(y)
      head_features = state[1]
      logits, points, lstm_out = jax.tree.map(lambda *a: jnp.stack(a), *ys)
    else:
      # Carried when being updated (training); otherwise read-only, like the params.
      updating = self.is_mutable_collection("batch_stats")
      scan = nn.scan(spatial_step,
                     variable_broadcast="params" if updating else ("params", "batch_stats"),
                     variable_carry="batch_stats" if updating else (),
                     split_rngs={"params": False}, in_axes=(0, nn.broadcast), length=k,
                     unroll=self.scan_unroll)
      (_, head_features), (logits, points, lstm_out) = scan(**step_fields, name="spatial")(
          init_carry, (squares, lstm_carries), frames)

    outputs = {"logits": logits, "points": points,
               "carry": lstm_out if self.use_temporal else None}
    if self.use_identity:
      outputs["identity_logits"] = IdentityHead(self.num_identities, self.dropout_rate,
                                                name="identity")(
          head_features["identity_code"], train).reshape(b, t, -1)
    if self.use_shape_regression:
      response = jax.nn.softmax(logits[-1].reshape(b * t, h, w, -1), axis=-1)
      residual = ShapeRegressionHead(self.num_landmarks, self.width, self.dropout_rate,
                                     self.bn_momentum, self.dtype, name="shape")(
          response, head_features, train)
      outputs["shape_residual"] = residual.reshape(b, t, self.num_landmarks, 2)
    return outputs

  def _step_fields(self, train: bool) -> dict[str, Any]:
    return dict(num_landmarks=self.num_landmarks, width=self.width,
                use_temporal=self.use_temporal, temporal_residual=self.temporal_residual,
                lstm_hidden=self.lstm_hidden,
                max_square=max(self.feedback_squares), readout=self.readout,
                readout_window=self.readout_window, bn_momentum=self.bn_momentum,
                dtype=self.dtype, train=train)

  def spatial_step(self, train: bool) -> SpatialStep:
    """The scanned body as a standalone module; its variables are this model's `spatial`
    subtree (with per-step BN statistics, the slice of one step). For tests and inspection."""
    return SpatialStep(**self._step_fields(train), parent=None)

  def square_sizes(self) -> list[int]:
    """Side of the feedback square fed into each of the K steps."""
    return [square_size_for_step(self.feedback_squares, i) for i in range(self.num_steps)]

  def _zero_head_features(self, n: int, h: int, w: int) -> dict[str, jax.Array]:
    """Placeholders of the step features the heads read (scan carries need a fixed structure)."""
    bottleneck = scaled_channels(VGG16_STAGES[4][-1], self.width)
    return {
        "identity_code": jnp.zeros((n, h // 32, w // 32, bottleneck // 2), self.dtype),
        "conv2_2": jnp.zeros((n, h // 2, w // 2, scaled_channels(128, self.width)), self.dtype),
        "conv4_3": jnp.zeros((n, h // 8, w // 8, scaled_channels(512, self.width)), self.dtype),
    }
