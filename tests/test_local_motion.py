"""The local-motion models (Belmonte et al., WACV 2019): Table 7's parameter counts, windows and
the stream carry, the temporal receptive field, the 3D family containing the 2D one, gradients,
and training windows."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rednet_jax.models import build_model
from rednet_jax.models.local_motion import VARIANTS, zscore_normalise
from rednet_jax.models.system import parameter_count

L, SIZE = 68, 64
# Table 7 of the paper: parameters (M) and size (MB).
TABLE7 = {"2d": (3.8, 15), "3d": (11.1, 43), "2drnn": (14.2, 55), "3drnn": (17.4, 67),
          "2dfcrnn": (10.2, 40), "3dfcrnn": (14.9, 58)}


def variant(name, **fields):
  convolution, recurrent, output = VARIANTS[name]
  return build_model(dict(name="local_motion", convolution=convolution, recurrent=recurrent,
                          output=output, **fields))


def tiny(name, **fields):
  return variant(name, width=1 / 16, **fields)


def clip(b=1, t=5, seed=0):
  rng = np.random.default_rng(seed)
  frames = zscore_normalise(jnp.asarray(rng.integers(0, 255, (b, t, SIZE, SIZE, 3)), jnp.uint8))
  return frames, jnp.asarray(rng.uniform(10, 54, (b, t, L, 2)), jnp.float32)


def with_random_bn_statistics(variables, seed=1):
  """Running statistics away from (0, 1), so eval-mode checks exercise them (means near 0:
  larger ones saturate the ELUs and leave outputs blind to their input)."""
  rng = np.random.default_rng(seed)
  stats = jax.tree_util.tree_map_with_path(
      lambda path, a: jnp.asarray(rng.uniform(-0.1, 0.1, a.shape) if path[-1].key == "mean"
                                  else rng.uniform(0.5, 1.5, a.shape), a.dtype),
      variables["batch_stats"])
  return {**variables, "batch_stats": stats}


def test_parameter_counts_and_shapes_beside_table7():
  """Full-size models: the paper's counts to its one decimal. The paper truncates: 2DRNN is
  14.297 M here, printed 14.2 (every row is consistent with truncation; with eq. 4's peepholes
  it would be 14.300 M, printed 14.3). Sizes are float32 MiB, within 1.1 MiB of Table 7 (the
  heatmap networks' files are 1 MiB larger there)."""
  frames, points = jnp.zeros((2, 3, SIZE, SIZE, 3)), jnp.zeros((2, 3, L, 2))
  for name, (millions, megabytes) in TABLE7.items():
    model = variant(name)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(0)}
    outputs, variables = jax.eval_shape(lambda m=model: m.init_with_output(rngs, frames, points))
    count = parameter_count(variables["params"])
    assert int(count / 1e5) / 10 == millions, (name, count)
    assert abs(count * 4 / 2 ** 20 - megabytes) <= 1.1, (name, count * 4 / 2 ** 20)
    assert outputs["points"].shape == (1, 2, 3, L, 2)
    key = "coordinates" if VARIANTS[name][2] == "coordinates" else "heatmaps"
    assert outputs[key].shape == ((2, 3, L, 2) if key == "coordinates" else (2, 3, 64, 64, L))
    assert (outputs["carry"] is None) == (name == "2d")


@pytest.mark.parametrize("name", ["3d", "2drnn", "3dfcrnn"])
def test_stream_in_chunks_equals_one_pass_and_the_video_starts_by_repeating_frame_0(name):
  """The carry is the last two frames: one frame at a time (the tracker) or chunks of 2 + 3
  give one pass's predictions; frame 0's window is frame 0 three times."""
  model = tiny(name)
  frames, points = clip(b=2, t=5)
  variables = with_random_bn_statistics(model.init_variables(frames, points))
  key = "coordinates" if model.output == "coordinates" else "heatmaps"
  apply = jax.jit(lambda f, p, c: model.apply(variables, f, p, c))
  whole = apply(frames, points, None)
  for splits in ([1, 2, 3, 4], [2]):
    carry, parts = model.initial_carry(2), []
    for part_frames, part_points in zip(jnp.split(frames, splits, 1), jnp.split(points, splits, 1)):
      out = apply(part_frames, part_points, carry)
      carry = out["carry"]
      parts.append(out)
    for name_ in (key, "points"):
      axis = 2 if name_ == "points" else 1
      np.testing.assert_allclose(jnp.concatenate([p[name_] for p in parts], axis), whole[name_],
                                 atol=2e-5, err_msg=name_)
  repeated = apply(jnp.repeat(frames[:, :1], 3, 1), points[:, :3], None)
  np.testing.assert_allclose(repeated[key][:, 2], whole[key][:, 0], atol=2e-5)
  assert np.abs(whole[key][:, 1] - whole[key][:, 0]).max() > 1e-3   # windows differ


@pytest.mark.parametrize("name,window", [("2d", (3,)), ("3d", (1, 2, 3)), ("2dfcrnn", (1, 2, 3))])
def test_temporal_receptive_field_is_the_window(name, window):
  """Frame 3's prediction depends on frames 1..3 for the temporal variants, frame 3 alone for
  2D: the gradient of its output reaches exactly those frames."""
  model = tiny(name)
  frames, points = clip(t=5)
  variables = with_random_bn_statistics(model.init_variables(frames, points))
  key = "coordinates" if model.output == "coordinates" else "heatmaps"
  # Jitted: op by op, XLA compiled ~280 small programs (8-13 s against 2-4 s).
  grad = jax.jit(jax.grad(lambda f: model.apply(variables, f, points)[key][:, 3].sum()))(
      frames)
  reached = tuple(int(t) for t in np.flatnonzero(np.abs(np.asarray(grad)).sum((0, 2, 3, 4))))
  assert reached == window


def test_the_3d_model_contains_the_2d_model():
  """Exact statements about early connectivity: (1) on three identical frames, a 3x3x3
  convolution's middle time step is the 2D convolution with its temporally summed kernel;
  (2) a 3D model whose kernels are zero off the centre tap and whose first FC reads only the
  last time step (the 2D model's weights there) predicts, for any window, what the 2D model
  predicts for the window's last frame: 2D is the 3D model without temporal weights."""
  frames, points = clip(t=3)
  two_d, three_d = tiny("2d"), tiny("3d")
  v2 = with_random_bn_statistics(two_d.init_variables(frames, points))
  v3 = three_d.init_variables(frames, points)
  kernel3 = v3["params"]["network"]["conv1"]["conv"]["kernel"]          # (3, 3, 3, 3, C)
  same = jnp.repeat(frames[:, :1], 3, 1)[0]                             # (3, H, W, 3)
  out3 = jax.lax.conv_general_dilated(same[None], kernel3, (1, 1, 1), "SAME",
                                      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))[0, 1]
  out2 = jax.lax.conv_general_dilated(same[:1], kernel3.sum(0), (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]
  np.testing.assert_allclose(out3, out2, atol=1e-4)

  def embed(p3, p2):
    p3 = flax.core.unfreeze(jax.tree.map(np.asarray, p3))
    for path, leaf2 in jax.tree_util.tree_leaves_with_path(p2):
      keys = [k.key for k in path]
      node = p3
      for k in keys[:-1]:
        node = node[k]
      leaf3 = node[keys[-1]]
      if leaf3.shape == leaf2.shape:
        node[keys[-1]] = np.asarray(leaf2)
      elif leaf3.ndim == 5:                         # conv: centre tap only
        node[keys[-1]] = np.zeros_like(leaf3)
        node[keys[-1]][1] = leaf2
      else:                                         # first FC: rows of the last time step
        node[keys[-1]] = np.zeros_like(leaf3)
        node[keys[-1]][-leaf2.shape[0]:] = leaf2
    return p3
  v3 = {"params": embed(v3["params"], v2["params"]), "batch_stats": v2["batch_stats"]}
  frames, points = clip(t=4, seed=3)
  np.testing.assert_allclose(jax.jit(three_d.apply)(v3, frames, points)["points"],
                             jax.jit(two_d.apply)(v2, frames, points)["points"], atol=1e-3)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_gradients_reach_every_parameter_and_training_uses_full_windows(name):
  """In training, the first two frames of a clip are history: weight 0, z_0 as their points,
  and the loss is the last frame's alone."""
  model = tiny(name)
  frames, points = clip(b=2, t=3)
  variables = model.init_variables(frames, points)
  batch = {"landmarks": points + 1.0}

  def loss(params):
    out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, frames,
                         points, train=True, mutable=["batch_stats"],
                         rngs={"dropout": jax.random.key(1)})
    return model.loss(out, batch, None)[0], out
  grads, out = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
  dead = [jax.tree_util.keystr(p) for p, g in jax.tree_util.tree_leaves_with_path(grads)
          if not np.any(np.asarray(g))]
  assert not dead, dead
  temporal = model.frames_per_prediction() == 3
  expected = [0.0, 0.0, 1.0] if temporal else [1.0, 1.0, 1.0]
  np.testing.assert_array_equal(out["frame_weights"], np.tile(expected, (2, 1)))
  if temporal:
    np.testing.assert_array_equal(out["points"][0, :, :2], points[:, :2])
    # The loss is the last frame's error alone.
    changed = {"landmarks": batch["landmarks"].at[:, :2].add(5.0)}
    np.testing.assert_allclose(model.loss(out, changed, None)[0], model.loss(out, batch, None)[0])
    with pytest.raises(ValueError, match="clip_length"):
      model.apply(variables, frames[:, :2], points[:, :2], train=True,
                  mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)})


def test_zscore_and_coordinate_convention():
  images = jnp.asarray(np.random.default_rng(0).integers(0, 255, (2, 8, 8, 3)), jnp.uint8)
  x = zscore_normalise(images)
  np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), 0.0, atol=1e-5)
  np.testing.assert_allclose(x.std(axis=(1, 2, 3)), 1.0, atol=1e-4)
  model = tiny("2d")
  corners = jnp.array([[-0.5, -0.5], [0.5, 0.5]])
  np.testing.assert_allclose(model.to_pixels(corners), [[-0.5, -0.5], [63.5, 63.5]])
  np.testing.assert_allclose(model.to_unit(model.to_pixels(corners)), corners)
  with pytest.raises(ValueError, match="model.input_size"):
    model.init_variables(jnp.zeros((1, 1, 96, 96, 3)), jnp.zeros((1, 1, L, 2)))


@pytest.mark.parametrize("layer", ["transposed", "3d", "3d_stride2"])
def test_the_rewritten_convolutions_are_flax_convolutions(layer):
  """Same parameters, outputs and gradients as nn.ConvTranspose(3x3, stride 2, 'SAME') and
  nn.Conv(3x3x3, strides (1, s, s), 'SAME')."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from rednet_jax.models.local_motion import Conv3x3x3, ConvTranspose3x3Stride2  # pylint: disable=g-import-not-at-top
  if layer == "transposed":
    x = jax.random.normal(jax.random.key(0), (2, 4, 5, 6))
    ours, reference = ConvTranspose3x3Stride2(7), nn.ConvTranspose(7, (3, 3), strides=(2, 2),
                                                                    padding="SAME")
  else:
    stride = 2 if layer == "3d_stride2" else 1
    x = jax.random.normal(jax.random.key(0), (2, 3, 8, 6, 5))
    ours = Conv3x3x3(7, stride)
    reference = nn.Conv(7, (3, 3, 3), strides=(1, stride, stride), padding="SAME")
  variables = ours.init(jax.random.key(1), x)
  variables = jax.tree.map(lambda a: a + jax.random.normal(jax.random.key(2), a.shape), variables)
  assert (jax.tree.map(jnp.shape, variables)
          == jax.tree.map(jnp.shape, reference.init(jax.random.key(1), x)))
  np.testing.assert_allclose(ours.apply(variables, x), reference.apply(variables, x), atol=1e-5)
  if layer == "transposed":   # the form its gradient is taken through
    from rednet_jax.models.local_motion import _depth_to_space_transpose  # pylint: disable=g-import-not-at-top
    np.testing.assert_allclose(
        _depth_to_space_transpose(x, variables["params"]["kernel"]) + variables["params"]["bias"],
        reference.apply(variables, x), atol=1e-5)
  loss = lambda module: lambda v, x: (module.apply(v, x) ** 2).sum()
  for a, b in zip(jax.tree.leaves(jax.jit(jax.grad(loss(ours), (0, 1)))(variables, x)),
                  jax.tree.leaves(jax.jit(jax.grad(loss(reference), (0, 1)))(variables, x))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_the_plateau_rule_scales_updates_after_patience_evaluations_without_improvement():
  from rednet_jax.training.train_step import (learning_rate_scale, make_optimizer,  # pylint: disable=g-import-not-at-top
                                              update_plateau)
  params = {"w": jnp.ones(3)}
  grads = {"w": jnp.array([1.0, -2.0, 0.5])}
  tx, _ = make_optimizer(1e-3, name="adam", decay_rate=0.1, schedule="plateau")
  state = tx.init(params)
  first, _ = tx.update(grads, state, params)
  scales = []
  for value in (1.0, 0.9, 0.95, 0.92, 0.97, 0.96, 0.99):  # best 0.9; then 2 bad, 2 bad
    state = update_plateau(state, value, factor=0.1, patience=2)
    scales.append(float(learning_rate_scale(state)))
  np.testing.assert_allclose(scales, [1, 1, 1, 0.1, 0.1, 0.01, 0.01], rtol=1e-6)
  scaled, _ = tx.update(grads, state, params)
  np.testing.assert_allclose(scaled["w"], 0.01 * first["w"], rtol=1e-5)
  assert float(learning_rate_scale(make_optimizer()[0].init(params))) == 1.0


def test_a_tiny_stage_trains_validates_exports_and_tracks_through_the_shared_interface(tmp_path):
  """The trainer (plateau schedule, validation every epoch), export, LandmarkModel and Tracker
  take a windowed model with no per-system code: 3DRNN on the tiny synthetic videos."""
  import json  # pylint: disable=g-import-not-at-top
  from rednet_jax.inference.detection import Face  # pylint: disable=g-import-not-at-top
  from rednet_jax.inference.landmark_model import (Tracker, export_run_stage,  # pylint: disable=g-import-not-at-top
                                                   load_model)
  from rednet_jax.training import configs  # pylint: disable=g-import-not-at-top
  from rednet_jax.training.trainer import train_and_evaluate  # pylint: disable=g-import-not-at-top
  tiny_video = configs.load_config("quickstart:tiny").video.data
  c = configs.load_config("local_motion:3drnn")
  c.data.update(kind="synthetic_videos", root="", size=32, workers=0, clips_per_video=1,
                validation_fraction=0.3, batch_size=4)
  c.data.synthetic.update(tiny_video.synthetic)
  c.model.width = 1 / 16          # Xavier output layer: points spread over the crop
  c.optimizer.plateau_patience_epochs = 1
  c.total_steps, c.log_every_steps, c.checkpoint_every_steps = 12, 2, 4
  c.eval.batch_size, c.eval.clips_per_video = 4, 1
  # One device (half the compile time): the trainer on four is test_training.py's.
  c.mesh.num_devices = 1
  configs.validate(c)
  final = train_and_evaluate(c, str(tmp_path / "run"))["train"]
  assert np.isfinite(final["nme_io"]) and final["frames"] > 0
  metrics = [json.loads(line) for line in open(tmp_path / "run" / "train" / "metrics.jsonl")]
  val = {m["step"]: m["nme_io"] for m in metrics if m["split"] == "val"}
  # 4 training videos x 1 clip, both directions, mirrored: 4 steps per epoch.
  assert sorted(val) == [4, 8]                     # none at the last step
  last_lr = [m["learning_rate"] for m in metrics if m["split"] == "train"][-1]
  np.testing.assert_allclose(last_lr, 1e-4 if val[8] < val[4] else 1e-5, rtol=1e-5)
  model = load_model(export_run_stage(str(tmp_path / "run"), "train", str(tmp_path / "export")))
  assert model.module.recurrent_dropout == 0.0 and model.size == 32
  frame = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
  tracker = Tracker(model, min_confidence=0.0)
  points, confidence = tracker.update(frame, face=Face(np.array([80.0, 60.0]), 50.0, 1.0))
  assert points.shape == (68, 2) and confidence == 1.0     # coordinates: no presence signal
  points, _ = tracker.update(frame)
  assert points.shape == (68, 2) and np.all(np.isfinite(points))
  # A model that puts every point on one pixel (an untrained coordinate regressor can) is not
  # a face to track from: no shape, and no crash cropping around it next frame.
  head = model.variables["params"]["network"]["coordinates"]
  head["kernel"], head["bias"] = np.zeros_like(head["kernel"]), np.zeros_like(head["bias"])
  collapsed = Tracker(model, min_confidence=0.0)
  assert collapsed.update(frame, face=Face(np.array([80.0, 60.0]), 50.0, 1.0)) == (None, 0.0)
  assert collapsed.update(frame)[0] is None
