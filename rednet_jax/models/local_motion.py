"""The local-motion models of Belmonte et al. (WACV 2019): early temporal connectivity (3D
convolutions over a window of frames) and late connectivity (an LSTM / ConvLSTM over the
window) on a coordinate regressor and on a heatmap network. Six variants, three fields:

  variant   convolution  recurrent  output        params (Table 7 / here, in the test)
  2D        '2d'         False      coordinates   3.8 M
  3D        '3d'         False      coordinates   11.1 M
  2DRNN     '2d'         True       coordinates   14.2 M (here 14.30 M: the paper's counts are
  3DRNN     '3d'         True       coordinates   17.4 M  truncated, 14.297 -> 14.2, see tests)
  2DFCRNN   '2d'         True       heatmaps      10.2 M
  3DFCRNN   '3d'         True       heatmaps      14.9 M

Windows. Every prediction is made from a window of `window` (3) consecutive frames and is the
prediction for the window's *last* frame (the paper keeps "the last time step"); the 2D model
without recurrence sees its frame alone. A stream is fed as a sliding window: frame t is
predicted from frames t-2, t-1, t, so a tracker runs the window once per frame (the cost behind
Table 7's CPU speeds). The last window-1 frames are the temporal carry, so a video processed in
chunks (the tracker: one frame at a time) gives exactly the predictions of one long pass. At the
start of a video the missing frames repeat its first frame. In training the first window-1
frames of a clip are history only: no prediction is made for them (their `points` are z_0 and
`frame_weights` 0), so a clip of 3 frames is the paper's training sample, one window of three
real frames. The LSTM starts from a zero state in every window (the paper's windows are
independent samples); it is not carried from window to window.

Layers (paper section 3; where it is silent or self-contradictory, the choice is named):
  coordinate CNN: 5 x [3x3 conv (32, 64, 128, 256, 512), BN, ELU, 2x2 max-pool] -> 2x2x512 at
    64 px; '3d': 3x3x3 convolutions over (time, y, x), pooling over space only. The paper's
    "padding of 2" would not reach 2x2x512: 'SAME' padding (64 / 2^5 = 2), which it implies.
  coordinate head: flatten (3D: all 3 time steps, 3 x 2x2x512) -> FC 1024, BN, ELU, dropout
    0.2 -> FC 2L. Recurrent: per time step flatten -> LSTM 1024 (recurrent dropout 0.2) -> the
    last step's output -> dropout 0.2 -> FC 2L (the LSTM replaces the first FC; BN and ELU after
    it are not restated, and the LSTM's output is already bounded). Outputs are coordinates in
    [-0.5, 0.5] of the crop (u = (x + 0.5) / size - 0.5).
  heatmap network: encoder of 5 [3x3 conv 256 stride 2 ('3d': 3x3x3, stride 1 in time), BN, ELU]
    -> 2x2x256; ConvLSTM 3x3 256 over the window (recurrent dropout 0.2) and its last step
    (without recurrence: the encoder's last time step); decoder of 5 [3x3 transposed conv 256
    stride 2, BN, ELU] back to 64x64, 1x1 conv 512, BN, ELU, 1x1 conv to L heatmaps at input
    resolution. The 1x1 convolutions' "padding of 2" is ignored (it would grow the maps).
  LSTM gates follow Keras' LSTM / ConvLSTM2D (the paper's vocabulary: Xavier uniform, ELU,
    time-distributed, recurrent dropout): no peepholes (eq. 4 shows them; Table 7's counts
    cannot tell, 3 x 1,024 parameters), one bias, forget-gate bias 1, one recurrent-dropout
    mask per sequence on the previous output.
  Initialisation: Xavier (Glorot) uniform for every kernel, zero biases; BN as Keras' (momentum
    0.99, epsilon 1e-3). Input: each frame Z-score normalised (its own mean and std).
  Read-out of heatmaps: the arg-max pixel (paper); 'peak_centroid' (sub-pixel centroid around
    it) is a field.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from rednet_jax.models.conv import Conv, conv_general_dilated
from rednet_jax.models.layers import scaled_channels
from rednet_jax.models.readout import peak_positions, windowed_centroid
from rednet_jax.models.system import Problems, System, check_inputs
from rednet_jax.models.targets import render_gaussian_heatmaps

Dtype = Any
CONVOLUTIONS = ("2d", "3d")
OUTPUTS = ("coordinates", "heatmaps")
READOUTS = ("peak", "peak_centroid")
HALVINGS = 5                 # 64 px -> 2x2: pooling stages, encoder and decoder layers
# Table 7 variant names -> (convolution, recurrent, output); configs use these names.
VARIANTS = {"2d": ("2d", False, "coordinates"), "3d": ("3d", False, "coordinates"),
            "2drnn": ("2d", True, "coordinates"), "3drnn": ("3d", True, "coordinates"),
            "2dfcrnn": ("2d", True, "heatmaps"), "3dfcrnn": ("3d", True, "heatmaps")}
xavier = nn.initializers.xavier_uniform()
WindowCarry = tuple[jax.Array, jax.Array]   # (last window-1 frames (B, w-1, S, S, 3), real (B,))


def zscore_normalise(images: jax.Array) -> jax.Array:
  """uint8 RGB (..., H, W, 3) -> each image less its mean, over its standard deviation."""
  x = images.astype(jnp.float32)
  mean = x.mean(axis=(-3, -2, -1), keepdims=True)
  std = x.std(axis=(-3, -2, -1), keepdims=True)
  return (x - mean) / jnp.maximum(std, 1.0)


def _batch_norm(train: bool, dtype: Dtype, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3, dtype=dtype,
                      name=name)


class Conv3x3x3(nn.Module):
  """nn.Conv(features, (3, 3, 3), strides=(1, s, s), padding='SAME') on (N, T, H, W, C), same
  parameters and outputs, computed as three 2D convolutions (one per temporal tap, over the
  frames shifted in time, zeros beyond the window) summed. Why: XLA:CPU's gradients of 3D
  convolutions were 1.2-45x slower than this (train-step pass of the first layer at 8 windows
  of 3 x 64 x 64: 0.56 -> 0.11 s at stride 1, 11.3 -> 0.25 s at stride 2;
  docs/engineering_notes.md)."""
  features: int
  strides: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", xavier, (3, 3, 3, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    n, t = x.shape[:2]
    padded = jnp.pad(x.astype(self.dtype), ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)))
    out = 0.0
    for tap in range(3):
      frames = padded[:, tap:tap + t].reshape(n * t, *x.shape[2:])
      out = out + conv_general_dilated(
          frames, kernel[tap].astype(self.dtype), (self.strides,) * 2, "SAME",
          dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return out.reshape(n, t, *out.shape[1:]) + bias.astype(self.dtype)


def _depth_to_space_transpose(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """A 3x3 stride-2 'SAME' transposed convolution (flax's convention, no bias) as one 2x2
  convolution at the input resolution giving the four output parities' channels, interleaved.
  Per axis, output pixel 2i reads kernel taps 0 and 2 at inputs i-1 and i, pixel 2i+1 tap 1 at
  input i."""
  def taps(k, parity):          # (3, ...) along one axis -> (2, ...): input offsets -1, 0
    return jnp.stack([k[0], k[2]]) if parity == 0 else jnp.stack([jnp.zeros_like(k[0]), k[1]])
  parts = []
  for p in (0, 1):
    rows = taps(kernel, p)                                              # (2, 3, Cin, Cout)
    for q in (0, 1):
      parts.append(taps(rows.swapaxes(0, 1), q).swapaxes(0, 1))         # (2, 2, Cin, Cout)
  merged = jnp.concatenate(parts, axis=-1)                              # (2, 2, Cin, 4 Cout)
  y = conv_general_dilated(x, merged, (1, 1), ((1, 0), (1, 0)),
                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
  b, h, w, _ = y.shape
  features = kernel.shape[-1]
  y = y.reshape(b, h, w, 2, 2, features).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(b, 2 * h, 2 * w, features)


@jax.custom_vjp
def _transpose_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Forward: XLA's own transposed convolution (faster at inference); gradient: through the
  depth-to-space form (same function; XLA:CPU's own gradient is 11x slower)."""
  return jax.lax.conv_transpose(x, kernel, (2, 2), "SAME",
                                dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _transpose_conv_forward(x, kernel):
  return _transpose_conv(x, kernel), (x, kernel)


def _transpose_conv_backward(residuals, g):
  return jax.vjp(_depth_to_space_transpose, *residuals)[1](g)


_transpose_conv.defvjp(_transpose_conv_forward, _transpose_conv_backward)


class ConvTranspose3x3Stride2(nn.Module):
  """nn.ConvTranspose(features, (3, 3), strides=(2, 2), padding='SAME'): same parameters,
  outputs and gradients, with the gradient computed through `_depth_to_space_transpose`. Why:
  XLA:CPU's gradient of the lhs-dilated convolution a transposed one lowers to took 7.0 s at
  8 x 32 x 32 x 256 -> 64 x 64 x 256, this form's 0.62 s; its forward pass is kept (the
  depth-to-space form multiplies 7 zero taps of 16: 2DFCRNN at batch 1, 140 vs 110 ms)."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", xavier, (3, 3, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return (_transpose_conv(x.astype(self.dtype), kernel.astype(self.dtype))
            + bias.astype(self.dtype))


class ConvBNELU(nn.Module):
  """Convolution (2D on (N, H, W, C) or 3D on (N, T, H, W, C)), BN, ELU, then optionally a 2x2
  max-pool over space. `strides` are spatial; 3D convolutions keep time (stride 1, 'SAME')."""
  features: int
  three_d: bool
  strides: int = 1
  pool: bool = False
  transpose: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if self.transpose:
      if self.three_d or self.strides != 2:
        raise ValueError("transposed convolutions here are 2D with stride 2")
      x = ConvTranspose3x3Stride2(self.features, self.dtype, name="conv")(x)
    elif self.three_d:
      x = Conv3x3x3(self.features, self.strides, self.dtype, name="conv")(x)
    else:
      x = Conv(self.features, (3, 3), strides=(self.strides,) * 2, padding="SAME",
               kernel_init=xavier, dtype=self.dtype, name="conv")(x)
    x = nn.elu(_batch_norm(train, self.dtype, "bn")(x))
    if self.pool:
      window = (1, 2, 2) if self.three_d else (2, 2)
      x = nn.max_pool(x, window, strides=window, padding="SAME")
    return x


class GatedCell(nn.Module):
  """One LSTM step (Keras' LSTM when `conv_kernel` is None, ConvLSTM2D otherwise): gates from
  the input (kernel + bias) and from the previous output (recurrent kernel, no bias), in the
  order i, f, c, o. carry (c, h); x the input; mask the recurrent-dropout mask on h."""
  features: int
  conv_kernel: tuple[int, int] | None = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, carry, x, mask):
    c, h = carry
    if self.conv_kernel is None:
      from_input = nn.Dense(4 * self.features, kernel_init=xavier, dtype=self.dtype, name="input")
      from_state = nn.Dense(4 * self.features, use_bias=False, kernel_init=xavier,
                            dtype=self.dtype, name="recurrent")
    else:
      from_input = Conv(4 * self.features, self.conv_kernel, padding="SAME",
                        kernel_init=xavier, dtype=self.dtype, name="input")
      from_state = Conv(4 * self.features, self.conv_kernel, padding="SAME", use_bias=False,
                        kernel_init=xavier, dtype=self.dtype, name="recurrent")
    gates = (from_input(x) + from_state(h * mask)).astype(jnp.float32)
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(g)   # + 1: forget bias 1
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (c, h), h


class WindowLSTM(nn.Module):
  """The cell scanned over the window (axis 1 of x (N, w, ...)) from a zero state; returns the
  last step's output. One recurrent-dropout mask per sequence (`recurrent_dropout`, training)."""
  features: int
  recurrent_dropout: float
  conv_kernel: tuple[int, int] | None = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    state_shape = (x.shape[0], *x.shape[2:-1], self.features)
    zeros = jnp.zeros(state_shape, jnp.float32)
    mask = jnp.ones(state_shape, jnp.float32)
    if train and self.recurrent_dropout > 0:
      keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.recurrent_dropout,
                                  state_shape)
      mask = keep / (1.0 - self.recurrent_dropout)
    scan = nn.scan(GatedCell, variable_broadcast="params", split_rngs={"params": False},
                   in_axes=(1, nn.broadcast), out_axes=1)
    (_, last), _ = scan(self.features, self.conv_kernel, self.dtype, name="cell")(
        (zeros, zeros), x, mask)
    return last


class WindowNetwork(nn.Module):
  """What both families share: windows (N, w, S, S, 3) in, early (3D) or late (recurrent)
  temporal connectivity, an output layer that may start at zero."""
  num_landmarks: int
  three_d: bool
  recurrent: bool
  recurrent_dropout: float
  zero_init_output: bool
  dtype: Dtype

  def frames(self, windows: jax.Array) -> jax.Array:
    """The first convolution's input: the windows for 3D convolutions, their N*w frames for
    a 2D CNN applied to every frame with shared weights (time-distributed)."""
    x = windows.astype(self.dtype)
    return x if self.three_d else x.reshape(-1, *x.shape[2:])

  def output_init(self):
    return nn.initializers.zeros if self.zero_init_output else xavier


class CoordinateNetwork(WindowNetwork):
  """Windows (N, w, S, S, 3) -> (N, 2L) coordinates in [-0.5, 0.5] (Figure 1)."""
  filters: tuple[int, ...] = (32, 64, 128, 256, 512)
  dense_units: int = 1024
  dropout_rate: float = 0.2

  @nn.compact
  def __call__(self, windows: jax.Array, train: bool) -> jax.Array:
    n, w = windows.shape[:2]
    x = self.frames(windows)
    for i, features in enumerate(self.filters):
      x = ConvBNELU(features, self.three_d, pool=True, dtype=self.dtype, name=f"conv{i + 1}")(
          x, train)
    x = x.reshape(n, w, -1).astype(jnp.float32)          # per time step: 2 x 2 x 512
    if self.recurrent:
      x = WindowLSTM(self.dense_units, self.recurrent_dropout, name="lstm")(x, train)
    else:
      x = nn.Dense(self.dense_units, kernel_init=xavier, name="dense")(x.reshape(n, -1))
      x = nn.elu(_batch_norm(train, jnp.float32, "dense_bn")(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(2 * self.num_landmarks, kernel_init=self.output_init(),
                    name="coordinates")(x)


class HeatmapNetwork(WindowNetwork):
  """Windows (N, w, S, S, 3) -> (N, S, S, L) heatmaps (Figure 2)."""
  features: int = 256
  head_features: int = 512
  layers: int = HALVINGS

  @nn.compact
  def __call__(self, windows: jax.Array, train: bool) -> jax.Array:
    n, w = windows.shape[:2]
    x = self.frames(windows)
    for i in range(self.layers):
      x = ConvBNELU(self.features, self.three_d, strides=2, dtype=self.dtype,
                    name=f"encoder{i + 1}")(x, train)
    x = x.reshape(n, w, *x.shape[-3:])
    if self.recurrent:
      x = WindowLSTM(self.features, self.recurrent_dropout, (3, 3), name="conv_lstm")(x, train)
    else:
      x = x[:, -1]
    x = x.astype(self.dtype)
    for i in range(self.layers):
      x = ConvBNELU(self.features, False, strides=2, transpose=True, dtype=self.dtype,
                    name=f"decoder{i + 1}")(x, train)
    x = Conv(self.head_features, (1, 1), kernel_init=xavier, dtype=self.dtype, name="head")(x)
    x = nn.elu(_batch_norm(train, self.dtype, "head_bn")(x))
    return Conv(self.num_landmarks, (1, 1), kernel_init=self.output_init(),
                name="heatmaps")(x.astype(jnp.float32))


class LocalMotion(System):
  """Belmonte et al.'s models; see the module docstring. Fields are the config's `model.*`."""
  num_landmarks: int = 68
  input_size: int = 64                    # crops are input_size^2 (the FC layer's input)
  convolution: str = "2d"                 # '2d' | '3d': early temporal connectivity
  recurrent: bool = False                 # late connectivity: LSTM / ConvLSTM over the window
  output: str = "coordinates"             # 'coordinates' (Fig. 1) | 'heatmaps' (Fig. 2)
  window: int = 3                         # frames per prediction of the temporal variants
  width: float = 1.0                      # channel multiplier (tests shrink it)
  filters: tuple[int, ...] = (32, 64, 128, 256, 512)   # coordinate CNN
  dense_units: int = 1024                 # FC / LSTM units
  heatmap_features: int = 256             # encoder, ConvLSTM and decoder channels
  head_features: int = 512                # the heatmap head's 1x1 convolution
  dropout_rate: float = 0.2
  recurrent_dropout: float = 0.2
  # False: Xavier like every layer (paper). True: the output layer starts at zero, so the
  # first predictions are the crop centre / empty maps instead of O(1) crop sizes away, which
  # Adam at lr 1e-4 takes thousands of steps to undo (too many for a CPU budget).
  zero_init_output: bool = False
  readout: str = "peak"                   # heatmaps: 'peak' (paper) | 'peak_centroid'
  readout_window: int = 3
  dtype: Dtype = jnp.float32

  inference_overrides = {"dropout_rate": 0.0, "recurrent_dropout": 0.0}

  def frames_per_prediction(self) -> int:
    temporal = self.convolution == "3d" or self.recurrent
    return self.window if temporal else 1

  def initial_carry(self, batch_size: int) -> WindowCarry | None:
    n = self.frames_per_prediction()
    if n == 1:
      return None
    size = self.input_size
    return (jnp.zeros((batch_size, n - 1, size, size, 3), jnp.float32),
            jnp.zeros((batch_size,), jnp.int32))

  def normalise(self, images: jax.Array) -> jax.Array:
    return zscore_normalise(images)

  def to_pixels(self, coordinates: jax.Array) -> jax.Array:
    """[-0.5, 0.5] of the crop -> input pixels (pixel centres at integers)."""
    return (coordinates + 0.5) * self.input_size - 0.5

  def to_unit(self, points: jax.Array) -> jax.Array:
    return (points + 0.5) / self.input_size - 0.5

  def loss(self, outputs, batch, mean_shape, clip_weights=None, *, gaussian_sigma: float = 3.0):
    """Mean squared error (Keras' 'mse': averaged over coordinates, or over heatmap pixels and
    channels) over the frames that have a prediction (`frame_weights`) of valid clips.
    Heatmap targets: a Gaussian of `gaussian_sigma` px at each landmark, peak 1 (the paper's
    "bivariate Gaussian of bandwidth 3x3" read as sigma 3 px per axis; a 3x3-pixel kernel,
    sigma ~0.8, is the other reading)."""
    landmarks = batch["landmarks"].astype(jnp.float32)
    weights = outputs["frame_weights"]
    if clip_weights is not None:
      weights = weights * clip_weights[:, None]
    if self.output == "coordinates":
      error = ((outputs["coordinates"] - self.to_unit(landmarks)) ** 2).mean(axis=(-2, -1))
    else:
      size = (self.input_size, self.input_size)
      targets = render_gaussian_heatmaps(landmarks, size, gaussian_sigma)
      error = ((outputs["heatmaps"] - targets) ** 2).mean(axis=(-3, -2, -1))
    total = jnp.sum(error * weights) / jnp.maximum(jnp.sum(weights), 1.0)
    return total, {self.output: total}

  def confidence(self, outputs: dict[str, Any]) -> jax.Array:
    """Heatmaps: the mean over landmarks of each map's peak, clipped to [0, 1] (targets peak at
    1). Coordinates: 1 everywhere -- a coordinate regressor has no face-presence signal, so the
    tracker re-detects only when the face is lost otherwise."""
    if self.output == "coordinates":
      return jnp.ones(outputs["points"].shape[1:3], jnp.float32)
    return jnp.clip(outputs["heatmaps"].max(axis=(-3, -2)), 0.0, 1.0).mean(axis=-1)

  def step_maps(self, outputs: dict[str, Any]) -> jax.Array:
    """(1, B, T, S, S): heatmaps' strongest response per pixel, clipped to [0, 1]; coordinate
    models: their predicted points drawn as Gaussians of 1.5 px (they have no maps)."""
    if self.output == "heatmaps":
      return jnp.clip(outputs["heatmaps"].max(-1), 0.0, 1.0)[None]
    size = (self.input_size, self.input_size)
    return render_gaussian_heatmaps(outputs["points"][-1], size, 1.5).max(-1)[None]

  @classmethod
  def config_problems(cls, model: Mapping[str, Any], loss: Mapping[str, Any]
                      ) -> list[tuple[str, str]]:
    problems = Problems()
    need = problems.need
    need(model["convolution"] in CONVOLUTIONS, "model.convolution",
         f"must be one of {list(CONVOLUTIONS)}")
    need(model["output"] in OUTPUTS, "model.output", f"must be one of {list(OUTPUTS)}")
    need(model["readout"] in READOUTS, "model.readout", f"must be one of {list(READOUTS)}")
    need(isinstance(model["window"], int) and model["window"] >= 2, "model.window",
         "must be an integer >= 2 (frames per prediction of the temporal variants)")
    need(isinstance(model["input_size"], int) and model["input_size"] >= 32
         and model["input_size"] % 32 == 0, "model.input_size",
         "must be a multiple of 32 (five halvings)")
    need(model["width"] > 0, "model.width", "must be > 0")
    need(len(model["filters"]) >= 1, "model.filters", "must list one or more layers")
    need(isinstance(model["readout_window"], int) and model["readout_window"] % 2 == 1,
         "model.readout_window", "must be an odd number of pixels")
    need(0 <= model["recurrent_dropout"] < 1, "model.recurrent_dropout", "must be in [0, 1)")
    need(loss.get("gaussian_sigma", 1.0) > 0, "loss.gaussian_sigma", "must be > 0")
    return problems

  def _windows(self, frames: jax.Array, carry: WindowCarry | None, train: bool):
    """(windows (B, T', n, S, S, 3), index of the first predicted frame, new carry). Frame t's
    window is frames t-n+1..t of the stream (carry first), the video's first frame repeated
    where the stream is shorter; in training from a fresh start, only full windows (T' = T-n+1)."""
    n = self.frames_per_prediction()
    b, t = frames.shape[:2]
    if n == 1:
      return frames[:, :, None], 0, None
    first = n - 1 if (train and carry is None) else 0
    if carry is None:
      carry = self.initial_carry(b)
    history, real = carry
    stream = jnp.concatenate([history.astype(frames.dtype), frames], axis=1)  # (B, n-1+T, ...)
    ends = jnp.arange(first, t) + (n - 1)                                     # stream positions
    index = ends[:, None] + jnp.arange(1 - n, 1)[None, :]                     # (T', n)
    index = jnp.maximum(index[None], (n - 1 - real)[:, None, None])           # (B, T', n)
    windows = jnp.take_along_axis(stream, index.reshape(b, -1, 1, 1, 1), axis=1)
    windows = windows.reshape(b, t - first, n, *frames.shape[2:])
    new_carry = (stream[:, -(n - 1):].astype(jnp.float32), jnp.minimum(real + t, n - 1))
    return windows, first, new_carry

  @nn.compact
  def __call__(self, frames: jax.Array, init_points: jax.Array, carry: WindowCarry | None = None,
               *, train: bool = False) -> dict[str, Any]:
    """frames (B, T, S, S, 3) normalised; init_points z_0 (B, T, L, 2) (unused: these models
    predict from the window alone; returned for frames without a prediction in training).

    Returns a dict:
      points         (1, B, T, L, 2) input px
      coordinates    (B, T, L, 2) in [-0.5, 0.5]   | heatmaps (B, T, S, S, L) (per `output`)
      frame_weights  (B, T) 1 where a prediction was made (0: training history frames)
      carry          the last window-1 frames (None for the single-frame 2D model)
    """
    b, t, h, w = check_inputs(frames, init_points, self.num_landmarks)
    if (h, w) != (self.input_size, self.input_size):
      raise ValueError(f"frames are {h}x{w}; this model takes {self.input_size}x"
                       f"{self.input_size} crops (model.input_size)")
    windows, first, new_carry = self._windows(frames, carry, train)
    tp = t - first
    if tp < 1:
      raise ValueError(f"training clips of {t} frames hold no full window of "
                       f"{self.frames_per_prediction()} frames (data.clip_length)")
    flat = windows.reshape(b * tp, *windows.shape[2:])
    shared = dict(num_landmarks=self.num_landmarks, three_d=self.convolution == "3d",
                  recurrent=self.recurrent, recurrent_dropout=self.recurrent_dropout,
                  zero_init_output=self.zero_init_output, dtype=self.dtype, name="network")
    if self.output == "coordinates":
      coordinates = CoordinateNetwork(
          filters=tuple(scaled_channels(f, self.width) for f in self.filters),
          dense_units=scaled_channels(self.dense_units, self.width),
          dropout_rate=self.dropout_rate, **shared)(flat, train)
      coordinates = coordinates.reshape(b, tp, self.num_landmarks, 2)
      points = self.to_pixels(coordinates)
      out = {"coordinates": coordinates}
    else:
      maps = HeatmapNetwork(features=scaled_channels(self.heatmap_features, self.width),
                            head_features=scaled_channels(self.head_features, self.width),
                            **shared)(flat, train)
      maps = maps.reshape(b, tp, h, w, self.num_landmarks)
      peaks = peak_positions(jax.lax.stop_gradient(maps))
      points = peaks if self.readout == "peak" else windowed_centroid(
          jnp.maximum(jax.lax.stop_gradient(maps), 0.0), peaks, self.readout_window)
      out = {"heatmaps": maps}
    weights = jnp.ones((b, t), jnp.float32)
    if first:   # training history frames: no prediction; z_0 stands in, weight 0
      points = jnp.concatenate([init_points[:, :first].astype(jnp.float32), points], axis=1)
      weights = weights.at[:, :first].set(0.0)
      out = {k: jnp.concatenate([jnp.zeros((b, first, *v.shape[2:]), v.dtype), v], axis=1)
             for k, v in out.items()}
    return {"points": points[None], "frame_weights": weights, "carry": new_carry, **out}
