"""RED-Net v2: parameter arithmetic, the shared-weight recurrence, temporal chunking, gradients,
targets, the sub-pixel read-out, the loss's foreground weighting and the torchvision import."""

import collections
import json
import io
import pickle
import sys
import types
import zipfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rednet_jax.models import build_model
from rednet_jax.models.losses import weighted_pixel_mean
from rednet_jax.models.pretrained import PretrainedWeightsError
from rednet_jax.models.readout import fit_similarity, peak_positions, windowed_centroid
from rednet_jax.models.rednet_v2 import MAJOR_LANDMARKS, V2Step
from rednet_jax.models.resnet import ResNetEncoder, ResNetStem
from rednet_jax.models.system import parameter_count
from rednet_jax.models.targets import render_disks, render_gaussian_heatmaps, to_map_pixels

SIZE, L = 32, 68


def tiny(**fields):
  base = dict(name="rednet_v2", encoder="resnet", encoder_depth=50, width=1 / 16)
  return build_model({**base, **fields})


def inputs(b=1, t=2, seed=0):
  rng = np.random.default_rng(seed)
  frames = jnp.asarray(rng.normal(size=(b, t, SIZE, SIZE, 3)), jnp.float32)
  points = jnp.asarray(rng.uniform(8, 24, size=(b, t, L, 2)), jnp.float32)
  return frames, points


def init(model, frames, points):
  return model.init_variables(frames, points)


count = parameter_count


def test_resnet152_encoder_has_torchvision_parameter_count():
  """C0..C4 at full width on 3 channels = torchvision resnet152 without fc: 60,192,808 -
  (2048 * 1000 + 1000) = 58,143,808 (conv weights, BN scale and bias)."""
  class StemAndEncoder(nn.Module):
    @nn.compact
    def __call__(self, x):
      return ResNetEncoder(152)(ResNetStem()(x, False), False)
  shapes = jax.eval_shape(StemAndEncoder().init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  assert count(shapes["params"]) == 58_143_808


def test_shapes_and_vgg_parameter_arithmetic():
  model = tiny(encoder="vgg16", width=1.0, use_identity=True, num_identities=10)
  frames, points = jnp.zeros((1, 1, 256, 256, 3)), jnp.zeros((1, 1, L, 2))
  shapes = jax.eval_shape(lambda r: model.init({"params": r, "dropout": r}, frames, points),
                          jax.random.key(0))
  out = jax.eval_shape(lambda v: model.apply(v, frames, points), shapes)
  assert out["detection_logits"].shape == (2, 1, 1, 128, 128, 7)
  assert out["regression_maps"].shape == (2, 1, 1, 128, 128, L)
  assert out["points"].shape == (2, 1, 1, L, 2)
  net = shapes["params"]["spatial"]["network"]
  # VGG-16's 13 convs (with bias) + BN, the first taking 3 + 7 channels.
  vgg = [(10, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
         (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
  assert count(net["encoder"]) == sum(9 * i * o + o + 2 * o for i, o in vgg)
  dec = [(512, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 256),
         (256, 256), (256, 256), (256, 128), (128, 128), (128, 128)]
  assert count(net["decoder"]) == sum(9 * i * o + o + 2 * o for i, o in dec)
  heads = shapes["params"]["spatial"]
  assert count(heads["detection_head"]) == 128 * 7 + 7
  assert count(heads["regression_head"]) == 128 * L + L
  # f_cls: 256-d embedding then N identities, on e_i (256 channels).
  assert count(shapes["params"]["identity"]) == 256 * 256 + 256 + 256 * 10 + 10
  # head_features sets the decoder's last width (what the 1x1 heads read) in both decoders.
  for encoder in ("vgg16", "resnet"):
    for head_features, expected in ((0, 128 // 8), (96, 96)):
      narrow = tiny(encoder=encoder, width=1 / 8, head_features=head_features)
      kernel = jax.eval_shape(lambda r, m=narrow: m.init({"params": r}, frames[:, :, :64, :64],
                                                         points), jax.random.key(0))
      assert kernel["params"]["spatial"]["regression_head"]["kernel"].shape == (
          1, 1, expected, L), (encoder, head_features)


def test_recurrent_model_equals_an_explicit_two_step_loop_and_chunks_equal_the_clip():
  model = tiny(use_temporal=True)
  frames, points = inputs(b=1, t=4)
  variables = init(model, frames, points)
  apply = jax.jit(model.apply)
  out = apply(variables, frames, points)
  # The same weights applied step by step with the body, per-step BN statistics and LSTM
  # chains sliced.
  step = V2Step(num_landmarks=L, network=dict(
      encoder="resnet", encoder_depth=50, width=1 / 16, feedback="image", use_temporal=True,
      temporal_residual=False, lstm_hidden=256, bn_momentum=0.9, head_features=0,
      dtype=jnp.float32),
      readout="peak_centroid", readout_window=5, search_window=0, gaussian_peak=1.0,
      feedback_gradient=True, train=False)
  major = to_map_pixels(points[..., jnp.asarray(MAJOR_LANDMARKS), :])
  feedback = render_disks(major, (16, 16), 5.0).reshape(4, 16, 16, 7)
  carry = (feedback, points, jnp.zeros((4, 1, 1, 1024 // 16), jnp.float32))
  lstm = model.initial_carry(1)
  for k, regression in enumerate((False, True)):
    v = {"params": variables["params"]["spatial"],
         "batch_stats": jax.tree.map(lambda a: a[k], variables["batch_stats"]["spatial"])}
    carry, (det, reg, pts, _) = jax.jit(step.apply)(
        v, carry, (jnp.asarray(regression), jax.tree.map(lambda a: a[k], lstm)), frames)
    np.testing.assert_allclose(det, out["detection_logits"][k], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(reg, out["regression_maps"][k], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pts, out["points"][k], rtol=1e-4, atol=1e-3)
  # Chunks of a clip with the carry passed on equal the whole clip; a fresh carry does not.
  first = apply(variables, frames[:, :2], points[:, :2])
  second = apply(variables, frames[:, 2:], points[:, 2:], first["carry"])
  np.testing.assert_allclose(
      jnp.concatenate([first["regression_maps"], second["regression_maps"]], axis=2),
      out["regression_maps"], rtol=1e-4, atol=1e-4)
  fresh = apply(variables, frames[:, 2:], points[:, 2:])
  assert np.abs(np.asarray(fresh["regression_maps"] - second["regression_maps"])).max() > 1e-5
  # Table 7's cascade: one parameter set per step.
  cascade = tiny(use_temporal=True, share_weights=False)
  shapes = jax.eval_shape(lambda r: cascade.init({"params": r}, frames, points),
                          jax.random.key(0))
  assert count(shapes["params"]) == 2 * count(variables["params"])


def test_gradients_reach_every_parameter():
  model = tiny(use_temporal=True, use_identity=True, num_identities=3)
  frames, points = inputs()
  variables = init(model, frames, points)
  batch = {"landmarks": points + 1.0, "identity": jnp.array([1])}

  def loss(params):
    out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, frames,
                         points, train=True, mutable=["batch_stats"],
                         rngs={"dropout": jax.random.key(1)})
    return model.loss(out, batch, None, weights={"regression": 10.0})[0]
  grads = jax.jit(jax.grad(loss))(variables["params"])
  dead = [jax.tree_util.keystr(p) for p, g in jax.tree_util.tree_leaves_with_path(grads)
          if not np.any(np.asarray(g))]
  assert not dead, dead


def test_disks_gaussians_and_foreground_weighting():
  point = jnp.array([[10.0, 12.0]])
  disk = render_disks(point, (32, 32), 5.0)[..., 0]
  ys, xs = np.mgrid[:32, :32]
  np.testing.assert_array_equal(disk, ((xs - 10) ** 2 + (ys - 12) ** 2 <= 25).astype(np.float32))
  gauss = render_gaussian_heatmaps(point, (32, 32), 5.0, peak=10.0)[..., 0]
  assert float(gauss[12, 10]) == pytest.approx(10.0)
  assert float(gauss[12, 15]) == pytest.approx(10.0 * np.exp(-0.5), rel=1e-5)   # 1 sigma
  per_pixel = jnp.ones((32, 32, 1))
  fg = disk[..., None] > 0
  n = float(fg.sum())
  assert float(weighted_pixel_mean(per_pixel, fg, 15.0, False)) == pytest.approx(
      (15 * n + 1024 - n) / 1024)
  # From the ratio: foreground and background then weigh the same in total.
  assert float(weighted_pixel_mean(per_pixel, fg, 15.0, True)) == pytest.approx(
      2 * (1024 - n) / 1024)


def test_subpixel_readout_recovers_a_known_peak_and_the_similarity_fit():
  truth = jnp.array([[13.3, 20.6], [5.8, 7.25]])
  maps = render_gaussian_heatmaps(truth, (32, 32), 1.5)                    # (32, 32, 2)
  peaks = peak_positions(maps)
  np.testing.assert_array_equal(peaks, jnp.round(truth))
  np.testing.assert_allclose(windowed_centroid(maps, peaks, 7), truth, atol=0.05)
  # Integer read-out is off by up to half a pixel; the centroid is not.
  assert np.abs(np.asarray(peaks - truth)).max() > 0.2
  source = jnp.asarray(np.random.default_rng(0).uniform(0, 30, (7, 2)), jnp.float32)
  angle, scale, shift = 0.3, 1.2, jnp.array([3.0, -2.0])
  rot = scale * jnp.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  matrix = fit_similarity(source, source @ rot.T + shift, jnp.ones(7))
  np.testing.assert_allclose(matrix, jnp.concatenate([rot, shift[:, None]], 1), atol=1e-4)


# A torch.save zip written without PyTorch: the pickle names torch's rebuild function and
# storage class, which stub modules stand in for while pickling.
def write_torch_state_dict(path, arrays):
  torch = types.ModuleType("torch")
  utils = types.ModuleType("torch._utils")

  class FloatStorage:
    pass
  FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"

  def _rebuild_tensor_v2(*args):
    raise AssertionError("only pickled, never called")
  _rebuild_tensor_v2.__module__ = "torch._utils"
  _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
  torch.FloatStorage, utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2

  class Tensor:
    def __init__(self, key, array):
      self.key, self.array = key, array

    def __reduce__(self):
      size = self.array.shape
      stride = tuple(int(np.prod(size[i + 1:])) for i in range(len(size)))
      storage = ("storage", FloatStorage, self.key, "cpu", self.array.size)
      return _rebuild_tensor_v2, (Storage(storage), 0, size, stride, False,
                                  collections.OrderedDict())

  class Storage:
    def __init__(self, pid):
      self.pid = pid

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      return obj.pid if isinstance(obj, Storage) else None

  state = collections.OrderedDict(
      (name, Tensor(str(i), np.ascontiguousarray(a, np.float32)))
      for i, (name, a) in enumerate(arrays.items()))
  saved = dict(sys.modules)
  sys.modules.update({"torch": torch, "torch._utils": utils})
  try:
    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(state)
  finally:
    sys.modules.clear()
    sys.modules.update(saved)
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", buffer.getvalue())
    for tensor in state.values():
      z.writestr(f"archive/data/{tensor.key}", tensor.array.tobytes())


def torchvision_resnet_state(depth_units, width, seed=0):
  rng = np.random.default_rng(seed)
  state = {}

  def conv(name, o, i, k):
    state[f"{name}.weight"] = rng.normal(size=(o, i, k, k))

  def bn(name, c):
    for key in ("weight", "bias", "running_mean"):
      state[f"{name}.{key}"] = rng.normal(size=(c,))
    state[f"{name}.running_var"] = rng.uniform(0.5, 2, size=(c,))
  c = lambda n: max(1, int(round(n * width)))
  conv("conv1", c(64), 3, 7)
  bn("bn1", c(64))
  in_ch = c(64)
  for block, (units, inner) in enumerate(zip(depth_units, (64, 128, 256, 512)), 1):
    for u in range(units):
      p = f"layer{block}.{u}"
      conv(f"{p}.conv1", c(inner), in_ch, 1)
      bn(f"{p}.bn1", c(inner))
      conv(f"{p}.conv2", c(inner), c(inner), 3)
      bn(f"{p}.bn2", c(inner))
      conv(f"{p}.conv3", 4 * c(inner), c(inner), 1)
      bn(f"{p}.bn3", 4 * c(inner))
      if u == 0:
        conv(f"{p}.downsample.0", 4 * c(inner), in_ch, 1)
        bn(f"{p}.downsample.1", 4 * c(inner))
      in_ch = 4 * c(inner)
  state["fc.weight"] = rng.normal(size=(10, in_ch))
  return state


def test_torchvision_resnet50_state_dict_loads_into_the_encoder(tmp_path):
  model = tiny()
  frames, points = inputs()
  variables = jax.device_get(init(model, frames, points))
  state = torchvision_resnet_state((3, 4, 6, 3), 1 / 16)
  path = str(tmp_path / "resnet50.pt")
  write_torch_state_dict(path, state)
  loaded = model.load_pretrained(variables, path)
  net = loaded["params"]["spatial"]["network"]
  stem = net["stem"]["conv1"]["kernel"]
  np.testing.assert_allclose(stem[:, :, :3], state["conv1.weight"].transpose(2, 3, 1, 0),
                             rtol=1e-6)
  assert stem.shape[2] == 10 and not np.any(stem[:, :, 3:])         # feedback starts at zero
  unit = net["encoder"]["block3_unit0"]
  np.testing.assert_allclose(unit["downsample_conv"]["kernel"],
                             state["layer3.0.downsample.0.weight"].transpose(2, 3, 1, 0),
                             rtol=1e-6)
  np.testing.assert_allclose(unit["bn3"]["scale"], state["layer3.0.bn3.weight"], rtol=1e-6)
  stats = loaded["batch_stats"]["spatial"]["network"]["encoder"]["block4_unit2"]["bn2"]["mean"]
  np.testing.assert_allclose(stats, np.broadcast_to(state["layer4.2.bn2.running_mean"],
                                                    stats.shape), rtol=1e-6)
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, loaded["params"]["spatial"]["network"]
                                          ["decoder"], variables["params"]["spatial"]
                                          ["network"]["decoder"])))
  # A file of another depth names what is missing.
  write_torch_state_dict(path, torchvision_resnet_state((3, 4, 2, 3), 1 / 16))
  with pytest.raises(PretrainedWeightsError, match="layer3.2"):
    model.load_pretrained(variables, path)


def test_a_tiny_vgg_stage_trains_exports_and_tracks_through_the_shared_interface(tmp_path):
  """The trainer, held-out evaluation, export, LandmarkModel and Tracker take v2 with no
  per-system code: two steps of the tiny synthetic image stage with the VGG variant."""
  from rednet_jax.inference.detection import Face  # pylint: disable=g-import-not-at-top
  from rednet_jax.inference.landmark_model import (Tracker, export_run_stage,  # pylint: disable=g-import-not-at-top
                                                   load_model)
  from rednet_jax.training import configs  # pylint: disable=g-import-not-at-top
  from rednet_jax.training.trainer import train_and_evaluate  # pylint: disable=g-import-not-at-top
  c = configs.rednet_v2_stage(configs.load_config("quickstart:tiny").image, "vgg16", cpu=True)
  c.model.width, c.model.head_features, c.data.size = 1 / 16, 0, 64
  c.total_steps, c.outputs = 2, ()
  c.checkpoint_every_steps, c.eval.max_batches = 2, 1
  # One device (half the compile time): the trainer on four is test_training.py's.
  c.mesh.num_devices = 1
  configs.validate(c)
  final = train_and_evaluate(c, str(tmp_path / "run"))["image"]
  assert np.isfinite(final["nme_io"]) and final["frames"] > 0
  metrics = [json.loads(line) for line in open(tmp_path / "run" / "image" / "metrics.jsonl")]
  train = [m for m in metrics if m["split"] == "train"]
  assert {"loss_detection", "loss_regression"} <= set(train[-1])
  model = load_model(export_run_stage(str(tmp_path / "run"), "image", str(tmp_path / "export")))
  assert model.module.use_identity is False and model.size == 64
  frame = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
  tracker = Tracker(model, min_confidence=0.0)
  points, confidence = tracker.update(frame, face=Face(np.array([80.0, 60.0]), 50.0, 1.0))
  assert points.shape == (68, 2) and 0 <= confidence <= 1
  points, _ = tracker.update(frame)
  assert points.shape == (68, 2) and np.all(np.isfinite(points))
