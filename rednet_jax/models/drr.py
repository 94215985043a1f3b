"""Deep Recurrent Regression (Lai et al., TCSVT 2018): a conv-deconv network keeps the input's
resolution, per-landmark "local mapping" maps give a rough shape that picks the initial shape
among k-means candidates, and an LSTM-driven cascade refines it over K steps from features
max-pooled around each landmark.

Pipeline for one face crop (S x S; the paper: the face box padded by 0.2 of its width on every
side, S = 256, or 128 in its smaller setting):
  conv-deconv   'vgg19': VGG-19's 16 convolutions (3x3, ReLU) with only pool1 and pool2 kept
                (conv3_1..conv5_4 run at S/4), or 'vgg_s' (Table VII: conv1 7x7 96, pool, conv2
                5x5 256, pool, conv3-5 3x3 512); then deconv6 and deconv7 (4x4, stride 2, pad 1,
                96 channels, ReLU) back to S x S: `deconv7`, C = 96 channels.
  local mapping conv8: a 1x1 convolution to L maps on deconv7 (the paper says "a new layer" and
                gives no kernel size), a spatial softmax per map; the target Q is 0.5^(Chebyshev
                distance to the landmark), normalised to sum 1; loss -sum Q log softmax. The
                arg-max pixel of each map is the rough shape.
  init search   S_0 = the candidate nearest (L2 over the whole shape) to the rough shape, among
                N k-means centres of the training shapes (`fit_to_shapes`, called by the trainer
                before the first step). `initialisation='given'` starts from z_0 instead: the
                mean shape on still images (Table X's "mean shape" row), the previous frame's
                shape when tracking.
  SIP           for each landmark, every deconv7 channel max-pooled over the b x b pixel block
                (b = 6) whose centre is nearest the landmark, moved inside the map at the border:
                F_k = an (L * C)-vector. A gather: the gradient reaches the arg-max pixels.
  cascade       K = 8 steps (`nn.scan`, one LSTM shared by the steps, zero initial state):
                F~_k = LSTM(F_k, F~_{k-1}); Delta S_k = R_k (F_k + F~_k) + b_k with one
                (R_k, b_k) per step (eq. 7, Fig. 7); S_{k+1} = S_k + Delta S_k.

Readings where the paper is silent or loose (each a field where it could matter):
  - F_k + F~_k (`recurrent_combine='sum'`, eq. 7 and eq. 13 as written) needs an LSTM as wide as
    F_k: L * C = 6,528 units at L = 68, C = 96, 341 M parameters. 'concat' reads Fig. 7's block
    as R_k [F_k; F~_k] (the same linear form with R_k split in two) and lets `lstm_units` be
    smaller. `recurrent_features=False` is Table IX's "without recurrent features":
    Delta S_k = R_k F_k + b_k.
  - The LSTM is the standard cell without peepholes, F~ = o * tanh(C) (flax's LSTM; eq. 11
    writes o * C, but the Caffe LSTM layer the paper names applies the tanh).
  - Shapes in the regression are in units of the crop side (the paper does not say): the loss
    is sum_k ||S* - S_{k+1}||^2 over the 2L coordinates, so `loss.weights` balance it against
    the local-mapping term (summed over landmarks, per image). R_k and b_k start at zero, so
    the cascade starts by keeping S_0.
  - No batch normalisation (VGG-19 and VGG-S have none): `batch_norm=True` adds BN after every
    convolution, for training from scratch when no ImageNet weights are at hand.
  - The paper gives no learning rate. R_k sees D = L * C non-negative features (6,528), so SGD's
    step on R_k grows with |F_k|^2 ~ D: from a He initialisation the regression diverged at
    lr 1e-3 and even 1e-5 (measured; see the config). `regressor_fan_in_scaling=True` feeds R_k
    (F_k + F~_k) / sqrt(D) instead, the same linear model with its step no longer growing with
    D (an lr multiplier of 1/D on R_k, which starts at zero); False is the paper as written.
  - Crop pixels: centres at integer coordinates, x to the right, y down (the project's
    convention); the rough shape is the arg-max pixel's centre.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rednet_jax.models.conv import Conv, conv_general_dilated
from rednet_jax.models.layers import ConvBNReLU, scaled_channels
from rednet_jax.models.readout import peak_positions
from rednet_jax.models.system import (Problems, System, check_inputs, clip_mean,
                                      imagenet_normalise, scan_steps)
from rednet_jax.models.targets import pixel_grid, render_gaussian_heatmaps
from rednet_jax.models.vgg import VGG19_STAGES

Dtype = Any
BACKBONES = ("vgg19", "vgg_s")
INITIALISATIONS = ("kmeans", "given")
RECURRENT_COMBINES = ("sum", "concat")
# VGG-S as Table VII: (name, channels, kernel, pool after).
VGG_S_LAYERS = (("conv1", 96, 7, True), ("conv2", 256, 5, True), ("conv3", 512, 3, False),
                ("conv4", 512, 3, False), ("conv5", 512, 3, False))


def local_mapping_target(points: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Q of the local mapping functions: per landmark 0.5^max(|x - j|, |y - k|) over the pixel
  grid, normalised to sum 1. points (..., L, 2) in pixels -> (..., H, W, L) float32."""
  xs, ys = pixel_grid(size)
  px = points[..., 0, None, None].astype(jnp.float32)            # (..., L, 1, 1)
  py = points[..., 1, None, None].astype(jnp.float32)
  q = 0.5 ** jnp.maximum(jnp.abs(xs - px), jnp.abs(ys - py))     # (..., L, H, W)
  q = q / q.sum(axis=(-2, -1), keepdims=True)
  return jnp.moveaxis(q, -3, -1)


def local_mapping_loss(logits: jax.Array, points: jax.Array) -> jax.Array:
  """-sum_jk Q log softmax(A) per landmark map (eq. 9), summed over landmarks.
  logits (..., H, W, L), points (..., L, 2) -> (...)."""
  size = logits.shape[-3:-1]
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=(-3, -2))
  return -jnp.sum(local_mapping_target(points, size) * log_probs, axis=(-3, -2, -1))


def nearest_candidate(shapes: jax.Array, candidates: jax.Array) -> jax.Array:
  """For each shape (..., L, 2), the candidate (N, L, 2) nearest in L2 over all coordinates
  (eq. 10)."""
  distances = jnp.sum((shapes[..., None, :, :] - candidates) ** 2, axis=(-2, -1))   # (..., N)
  return candidates[jnp.argmin(distances, axis=-1)]


def block_starts(points: jax.Array, box: int, size: tuple[int, int]) -> jax.Array:
  """Top-left pixel (x, y) of the box x box block whose centre is nearest each point, moved
  inside an (H, W) map. points (..., 2) -> int32 (..., 2)."""
  h, w = size
  start = jnp.round(points - (box - 1) / 2.0).astype(jnp.int32)
  return jnp.clip(start, 0, jnp.asarray([w - box, h - box], jnp.int32))


def shape_indexed_pooling(features: jax.Array, points: jax.Array, box: int) -> jax.Array:
  """SIP: every channel of `features` (B, H, W, C) max-pooled over the box x box block around
  each point (B, L, 2) (`block_starts`) -> (B, L, C). The points select the blocks and carry no
  gradient; the features' gradient goes to each block's arg-max."""
  starts = block_starts(jax.lax.stop_gradient(points), box, features.shape[1:3])

  def one_block(image, start):
    block = jax.lax.dynamic_slice(image, (start[1], start[0], 0), (box, box, image.shape[-1]))
    return block.max(axis=(0, 1))

  per_image = jax.vmap(one_block, in_axes=(None, 0))
  return jax.vmap(per_image)(features, starts)


def caffe_deconvolution(x: jax.Array, kernel: jax.Array, stride: int, pad: int) -> jax.Array:
  """Caffe's Deconvolution (the gradient of a convolution): every input pixel i adds
  kernel[k] @ x[i] to output pixel stride * i - pad + k. x (B, H, W, Cin), kernel
  (kh, kw, Cout, Cin) -> (B, stride (H - 1) + kh - 2 pad, ...)."""
  kh, kw = kernel.shape[:2]
  return jax.lax.conv_transpose(
      x, kernel, (stride, stride), ((kh - 1 - pad, kh - 1 - pad), (kw - 1 - pad, kw - 1 - pad)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=True)


# Per output parity along one axis of the 4x4 / stride 2 / pad 1 deconvolution: the kernel taps
# that reach it, ordered by input offset, and the padding that aligns them. Output 2m takes tap 3
# at input m-1 and tap 1 at m; output 2m+1 takes tap 2 at m and tap 0 at m+1.
_PARITY_TAPS = ((3, 1), (2, 0))
_PARITY_PADS = ((1, 0), (0, 1))


def deconvolution_by_parity(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`caffe_deconvolution(x, kernel, 2, 1)` for a 4x4 kernel (kh, kw, Cout, Cin) as four 2x2
  convolutions at the input resolution, one per output parity, interleaved."""
  weights = kernel.swapaxes(2, 3)                                     # (4, 4, Cin, Cout)
  rows = []
  for taps_y, pad_y in zip(_PARITY_TAPS, _PARITY_PADS):
    cols = []
    for taps_x, pad_x in zip(_PARITY_TAPS, _PARITY_PADS):
      taps = weights[np.asarray(taps_y)][:, np.asarray(taps_x)]     # (2, 2, Cin, Cout)
      cols.append(conv_general_dilated(
          x, taps, (1, 1), (pad_y, pad_x), dimension_numbers=("NHWC", "HWIO", "NHWC")))
    rows.append(jnp.stack(cols, axis=3))                              # (B, H, W, 2, C)
  y = jnp.stack(rows, axis=2)                                         # (B, H, 2, W, 2, C)
  b, h, _, w, _, c = y.shape
  return y.reshape(b, 2 * h, 2 * w, c)


@jax.custom_vjp
def deconvolution_4x4_stride2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`caffe_deconvolution(x, kernel, 2, 1)`: XLA's transposed convolution forward, the gradient
  through `deconvolution_by_parity` (the same function). Why: XLA:CPU's own gradient of the
  transposed convolution took 9.5 s (16 x 32 x 32 x 512 -> 64 x 64 x 96) and 8.0 s (16 x 64 x 64
  x 96 -> 128 x 128 x 96) against 0.2 and 0.45 s forward, half of a VGG-S 128 training step."""
  return caffe_deconvolution(x, kernel, 2, 1)


def _deconvolution_forward(x, kernel):
  return deconvolution_4x4_stride2(x, kernel), (x, kernel)


def _deconvolution_backward(residuals, g):
  return jax.vjp(deconvolution_by_parity, *residuals)[1](g)


deconvolution_4x4_stride2.defvjp(_deconvolution_forward, _deconvolution_backward)


class Deconvolution(nn.Module):
  """4x4, stride 2, pad 1 deconvolution (doubles the size), bias, optional BN, ReLU."""
  features: int
  batch_norm: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    # transpose_kernel=True swaps HWIO's I and O: the stored kernel is (4, 4, Cout, Cin), a
    # Caffe deconvolution's blob laid out as a convolution's.
    kernel = self.param("kernel", nn.initializers.he_normal(),
                        (4, 4, self.features, x.shape[-1]))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    x = deconvolution_4x4_stride2(x.astype(self.dtype), kernel.astype(self.dtype))
    x = x + bias.astype(self.dtype)
    if self.batch_norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                       name="bn")(x)
    return nn.relu(x)


class ConvDeconv(nn.Module):
  """The spatial-resolution-preserving network: (B, S, S, 3) -> deconv7 (B, S, S, C)."""
  backbone: str = "vgg19"
  width: float = 1.0
  deconv_features: int = 96
  batch_norm: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    def conv(x, channels, kernel, name):
      return ConvBNReLU(scaled_channels(channels, self.width), (kernel, kernel), 0.9,
                        self.dtype, self.batch_norm, name=name)(x, train)

    if self.backbone == "vgg19":
      for stage, channels in enumerate(VGG19_STAGES, start=1):
        for layer, c in enumerate(channels, start=1):
          x = conv(x, c, 3, f"conv{stage}_{layer}")
        if stage <= 2:
          x = nn.max_pool(x, (2, 2), (2, 2))
    elif self.backbone == "vgg_s":
      for name, c, kernel, pool in VGG_S_LAYERS:
        x = conv(x, c, kernel, name)
        if pool:
          x = nn.max_pool(x, (2, 2), (2, 2))
    else:
      raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
    features = scaled_channels(self.deconv_features, self.width)
    for name in ("deconv6", "deconv7"):
      x = Deconvolution(features, self.batch_norm, self.dtype, name=name)(x, train)
    return x


class RegressionStep(nn.Module):
  """One cascade step (scanned): SIP at the current shape, the shared LSTM, this step's
  regressor (R_k, b_k arrive as the scanned input)."""
  box: int
  recurrent_features: bool
  recurrent_combine: str
  lstm_units: int
  regressor_fan_in_scaling: bool

  @nn.compact
  def __call__(self, carry, regressor, features):
    lstm_carry, shape = carry
    weight, bias = regressor
    b, size = shape.shape[0], features.shape[1]
    pooled = shape_indexed_pooling(features, shape, self.box).astype(jnp.float32)
    f = pooled.reshape(b, -1)                                          # F_k (B, L * C)
    if self.recurrent_features:
      lstm_carry, recurrent = nn.OptimizedLSTMCell(self.lstm_units, name="lstm")(lstm_carry, f)
      f = f + recurrent if self.recurrent_combine == "sum" else jnp.concatenate(
          [f, recurrent], axis=-1)
    if self.regressor_fan_in_scaling:
      f = f * jax.lax.rsqrt(float(f.shape[-1]))
    delta = (f @ weight + bias).reshape(shape.shape) * size           # crop sides -> pixels
    shape = shape + delta
    return (lstm_carry, shape), shape


class DeepRecurrentRegression(System):
  """Lai et al.'s DRR; see the module docstring. Fields are the config's `model.*`."""
  num_landmarks: int = 68
  backbone: str = "vgg19"                 # 'vgg19' | 'vgg_s' (Table VII)
  width: float = 1.0                      # channel multiplier (tests shrink it)
  deconv_features: int = 96               # C, the channels of deconv6 / deconv7
  batch_norm: bool = False                # paper: none
  num_steps: int = 8                      # K
  box: int = 6                            # SIP block side b
  initialisation: str = "kmeans"          # 'kmeans' (eq. 10) | 'given' (z_0; Table X)
  num_candidates: int = 50                # N
  recurrent_features: bool = True         # False: Table IX "without recurrent features"
  recurrent_combine: str = "sum"          # 'sum': R_k (F_k + F~_k), eq. 7 | 'concat'
  lstm_units: int = 0                     # 'concat' only (0: as wide as F_k); 'sum': L * C
  regressor_fan_in_scaling: bool = False  # paper: False; True: R_k's input / sqrt(its length)
  scan_unroll: int = 1
  dtype: Dtype = jnp.float32

  def initial_carry(self, batch_size: int) -> None:
    return None                           # a still-image model: frames are independent

  def normalise(self, images: jax.Array) -> jax.Array:
    return imagenet_normalise(images)

  def feature_size(self) -> int:
    """Length of F_k: L * C."""
    return self.num_landmarks * scaled_channels(self.deconv_features, self.width)

  def recurrent_size(self) -> int:
    if self.recurrent_combine == "sum" or not self.lstm_units:
      return self.feature_size()
    return self.lstm_units

  def regressor_size(self) -> int:
    """Input length of R_k."""
    if not self.recurrent_features or self.recurrent_combine == "sum":
      return self.feature_size()
    return self.feature_size() + self.recurrent_size()

  def fit_to_shapes(self, variables: dict[str, Any], shapes: np.ndarray, seed: int = 0
                    ) -> dict[str, Any]:
    """The N candidate shapes: k-means centres (k-means++ seeding, scipy) of training shapes
    (n, L, 2) in crop pixels, written into the variables (collection 'batch_stats', the
    project's non-trained state, so checkpoints and exports carry them)."""
    from scipy.cluster.vq import kmeans2    # scipy comes with jax; no new dependency
    shapes = np.asarray(shapes, np.float64)
    n = self.num_candidates
    if shapes.ndim != 3 or shapes.shape[1:] != (self.num_landmarks, 2):
      raise ValueError(f"training shapes must be (n, {self.num_landmarks}, 2), got "
                       f"{shapes.shape}")
    if len(shapes) < n:
      raise ValueError(f"model.num_candidates is {n} but the training data has only "
                       f"{len(shapes)} shapes")
    centres, _ = kmeans2(shapes.reshape(len(shapes), -1), n, iter=50, minit="++",
                         seed=np.random.default_rng(seed))
    stats = dict(variables["batch_stats"])
    stats["candidates"] = jnp.asarray(centres.reshape(n, self.num_landmarks, 2), jnp.float32)
    return {**variables, "batch_stats": stats}

  def load_pretrained(self, variables, path):
    """ImageNet VGG-19 for the 'vgg19' backbone (`pretrained.load_vgg19_into_drr`); the new
    layers (deconv6/7, conv8, LSTM, regressors) keep their initialisation."""
    if self.backbone != "vgg19":
      raise ValueError(f"config.pretrained_weights: ImageNet weights load into backbone "
                       f"'vgg19' only; model.backbone is {self.backbone!r} (VGG-S weights are "
                       "not published in a format read here)")
    from rednet_jax.models.pretrained import load_vgg19_into_drr  # pylint: disable=g-import-not-at-top
    return load_vgg19_into_drr(variables, path)

  def loss(self, outputs, batch, mean_shape, clip_weights=None, *,
           weights: Mapping[str, float] | None = None):
    """Local mapping (eq. 14: summed over landmarks and frames) plus the regression of every
    step (eq. 16: ||S* - S_{k+1}||^2 in crop sides, summed over coordinates, steps and
    frames), each averaged over the (valid) clips and weighted by `weights`."""
    weights = dict(weights or {})
    landmarks = batch["landmarks"].astype(jnp.float32)
    size = outputs["local_mapping"].shape[-2]
    per_clip = {
        "local_mapping": local_mapping_loss(outputs["local_mapping"], landmarks).sum(-1),
        "regression": jnp.sum(((outputs["points"] - landmarks) / size) ** 2,
                              axis=(0, 2, 3, 4)),
    }
    terms = {name: clip_mean(value, clip_weights) for name, value in per_clip.items()}
    total = sum(weights.get(name, 1.0) * value for name, value in terms.items())
    return total, terms

  def confidence(self, outputs: dict[str, Any]) -> jax.Array:
    """Mean over landmarks of each local-mapping map's peak probability relative to the
    target's peak (a trained map that is as sharp as Q scores 1), clipped to [0, 1]."""
    maps = outputs["local_mapping"]
    size = maps.shape[-3:-1]
    q_peak = local_mapping_target(jnp.full((1, 2), (size[0] // 2)), size).max()
    peak = jax.nn.softmax(maps.astype(jnp.float32), axis=(-3, -2)).max(axis=(-3, -2))
    return jnp.clip(peak / q_peak, 0.0, 1.0).mean(-1)

  def step_maps(self, outputs: dict[str, Any]) -> jax.Array:
    """(K, B, T, S, S): each step's shape drawn as Gaussians of 1.5 px (the cascade has no
    maps of its own)."""
    size = outputs["local_mapping"].shape[-3:-1]
    return render_gaussian_heatmaps(outputs["points"], size, 1.5).max(-1)

  @classmethod
  def config_problems(cls, model: Mapping[str, Any], loss: Mapping[str, Any]
                      ) -> list[tuple[str, str]]:
    problems = Problems()
    need = problems.need
    need(model["backbone"] in BACKBONES, "model.backbone", f"must be one of {list(BACKBONES)}")
    need(model["initialisation"] in INITIALISATIONS, "model.initialisation",
         f"must be one of {list(INITIALISATIONS)}")
    need(model["recurrent_combine"] in RECURRENT_COMBINES, "model.recurrent_combine",
         f"must be one of {list(RECURRENT_COMBINES)}")
    need(model["recurrent_combine"] == "concat" or not model["lstm_units"], "model.lstm_units",
         "must be 0 with recurrent_combine='sum' (the LSTM is as wide as F_k, L * C)")
    need(isinstance(model["num_steps"], int) and model["num_steps"] >= 1, "model.num_steps",
         "must be an integer >= 1")
    need(isinstance(model["box"], int) and model["box"] >= 1, "model.box",
         "must be an integer >= 1 (pixels)")
    need(isinstance(model["num_candidates"], int) and model["num_candidates"] >= 1,
         "model.num_candidates", "must be an integer >= 1")
    need(model["width"] > 0, "model.width", "must be > 0")
    unknown = set(loss.get("weights", {})) - {"local_mapping", "regression"}
    need(not unknown, "loss.weights", f"has unknown terms {sorted(unknown)}; known: "
         "local_mapping, regression")
    return problems

  @nn.compact
  def __call__(self, frames: jax.Array, init_points: jax.Array, carry: None = None, *,
               train: bool = False) -> dict[str, Any]:
    """frames (B, T, S, S, 3) normalised; init_points z_0 (B, T, L, 2) (used only with
    initialisation='given'; before `fit_to_shapes` every candidate is z_0's first shape).

    Returns a dict:
      points          (K, B, T, L, 2) input px: the shape after each cascade step
      initial_points  (B, T, L, 2) S_0
      rough_points    (B, T, L, 2) the local mapping's arg-max shape
      local_mapping   (B, T, S, S, L) conv8's logits
      carry           None
    """
    b, t, h, w = check_inputs(frames, init_points, self.num_landmarks)
    if h != w:
      raise ValueError(f"frames are {h}x{w}; DRR takes square crops")
    flat = frames.reshape(b * t, h, w, 3)
    features = ConvDeconv(self.backbone, self.width, self.deconv_features, self.batch_norm,
                          self.dtype, name="conv_deconv")(flat, train)
    logits = Conv(self.num_landmarks, (1, 1), dtype=self.dtype, name="conv8")(features)
    logits = logits.astype(jnp.float32)
    rough = peak_positions(jax.lax.stop_gradient(logits))              # (B*T, L, 2)
    given = init_points.reshape(b * t, self.num_landmarks, 2).astype(jnp.float32)
    candidates = self.variable(
        "batch_stats", "candidates",
        lambda: jnp.broadcast_to(given[0], (self.num_candidates, self.num_landmarks, 2)))
    if self.initialisation == "kmeans":
      start = nearest_candidate(rough, candidates.value)
    else:
      start = given
    start = jax.lax.stop_gradient(start)

    k, d_in = self.num_steps, self.regressor_size()
    weight = self.param("regressor_weights", nn.initializers.zeros,
                        (k, d_in, 2 * self.num_landmarks))
    bias = self.param("regressor_biases", nn.initializers.zeros, (k, 2 * self.num_landmarks))
    lstm_carry = (jnp.zeros((b * t, self.recurrent_size()), jnp.float32),) * 2
    cascade = scan_steps(
        self, RegressionStep, dict(box=self.box, recurrent_features=self.recurrent_features,
                                   recurrent_combine=self.recurrent_combine,
                                   lstm_units=self.recurrent_size(),
                                   regressor_fan_in_scaling=self.regressor_fan_in_scaling),
        length=k, unroll=self.scan_unroll, name="cascade")
    _, shapes = cascade((lstm_carry, start), (weight, bias), features)   # (K, B*T, L, 2)

    return {"points": shapes.reshape(k, b, t, self.num_landmarks, 2),
            "initial_points": start.reshape(b, t, self.num_landmarks, 2),
            "rough_points": rough.reshape(b, t, self.num_landmarks, 2),
            "local_mapping": logits.reshape(b, t, h, w, self.num_landmarks),
            "carry": None}
