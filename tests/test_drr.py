"""Deep Recurrent Regression (Lai et al.): the conv-deconv backbones against VGG-19 / Table VII,
Caffe's deconvolution, the local-mapping target and loss, shape-indexed pooling, the k-means
initialisation search and the scanned cascade against an explicit loop."""

import glob
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest

from rednet_jax.models import build_model
from rednet_jax.models.drr import (ConvDeconv, caffe_deconvolution, deconvolution_4x4_stride2,
                                   deconvolution_by_parity, local_mapping_loss,
                                   local_mapping_target, nearest_candidate,
                                   shape_indexed_pooling)
from rednet_jax.models.pretrained import VGG19_LAYER_NAMES, PretrainedWeightsError
from rednet_jax.models.system import parameter_count
from rednet_jax.models.vgg import VGG19_STAGES

L = 68
# VGG-19's 16 convolutions (torchvision vgg19 `features`: 20,024,384 weights and biases).
VGG19_CONV_PARAMETERS = 20_024_384


def tiny(**fields):
  config = dict(name="drr", backbone="vgg_s", width=1 / 16, num_steps=3, num_candidates=4)
  config.update(fields)
  return build_model(config)


def inputs(b=2, t=1, size=32, seed=0):
  rng = np.random.default_rng(seed)
  frames = jnp.asarray(rng.normal(size=(b, t, size, size, 3)), jnp.float32)
  points = jnp.asarray(rng.uniform(4, size - 5, (b, t, L, 2)), jnp.float32)
  return frames, points


def shapes_of(module, size):
  x = jnp.zeros((1, size, size, 3))
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0), x, False))
  out = jax.eval_shape(lambda v: module.apply(v, x, False), variables)
  return variables["params"], out


def test_vgg19_backbone_has_vgg19s_sixteen_convolutions_and_keeps_the_resolution():
  params, out = shapes_of(ConvDeconv("vgg19"), 64)
  convs = {k: v for k, v in params.items() if k.startswith("conv")}
  assert len(convs) == 16 and parameter_count(convs) == VGG19_CONV_PARAMETERS
  assert out.shape == (1, 64, 64, 96)
  # The two deconvolutions: 4x4 from 512 and from 96 channels to 96, with biases.
  assert parameter_count(params["deconv6"]) == 16 * 512 * 96 + 96
  assert parameter_count(params["deconv7"]) == 16 * 96 * 96 + 96


def test_vgg_s_backbone_is_table_vii():
  params, out = shapes_of(ConvDeconv("vgg_s"), 256)
  assert out.shape == (1, 256, 256, 96)
  kernels = {k: v["conv"]["kernel"].shape if "conv" in v else v["kernel"].shape
             for k, v in params.items()}
  assert kernels == {"conv1": (7, 7, 3, 96), "conv2": (5, 5, 96, 256),
                     "conv3": (3, 3, 256, 512), "conv4": (3, 3, 512, 512),
                     "conv5": (3, 3, 512, 512), "deconv6": (4, 4, 96, 512),
                     "deconv7": (4, 4, 96, 96)}


def test_deconvolution_is_caffes_scatter_definition():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 3, 4, 2)).astype(np.float32)
  kernel = rng.normal(size=(4, 4, 5, 2)).astype(np.float32)       # (kh, kw, Cout, Cin)
  stride, pad = 2, 1
  expected = np.zeros((1, 2 * 3 + 2, 2 * 4 + 2, 5), np.float32)   # before cropping the pad
  for i in range(3):
    for j in range(4):
      for a in range(4):
        for b in range(4):
          expected[0, stride * i + a, stride * j + b] += kernel[a, b] @ x[0, i, j]
  expected = expected[:, pad:pad + 6, pad:pad + 8]
  np.testing.assert_allclose(caffe_deconvolution(x, kernel, stride, pad), expected, atol=1e-5)


def test_deconvolution_gradient_by_output_parity_equals_xlas():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 5, 6, 3)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(4, 4, 7, 3)), jnp.float32)
  np.testing.assert_allclose(deconvolution_by_parity(x, kernel),
                             caffe_deconvolution(x, kernel, 2, 1), atol=1e-5)
  np.testing.assert_array_equal(deconvolution_4x4_stride2(x, kernel),
                                caffe_deconvolution(x, kernel, 2, 1))
  weights = jnp.asarray(rng.normal(size=(2, 10, 12, 7)), jnp.float32)
  ours = jax.grad(lambda x, k: jnp.sum(weights * deconvolution_4x4_stride2(x, k)), (0, 1))
  xla = jax.grad(lambda x, k: jnp.sum(weights * caffe_deconvolution(x, k, 2, 1)), (0, 1))
  for got, want in zip(ours(x, kernel), xla(x, kernel)):
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)
  jax.test_util.check_grads(deconvolution_4x4_stride2, (x, kernel), order=1, modes=("rev",),
                            atol=1e-2, rtol=1e-2)


def test_local_mapping_target_sums_to_one_and_halves_per_chebyshev_ring():
  points = jnp.asarray([[[5.0, 7.0], [0.0, 0.0], [10.3, 2.6]]])
  q = np.asarray(local_mapping_target(points, (12, 16)))            # (1, 12, 16, 3)
  np.testing.assert_allclose(q.sum(axis=(1, 2)), 1.0, rtol=1e-6)
  for i, (x, y) in enumerate([(5, 7), (0, 0), (10, 3)]):
    assert np.unravel_index(q[0, ..., i].argmax(), (12, 16)) == (y, x)
  peak = q[0, 7, 5, 0]
  np.testing.assert_allclose(q[0, 6, 4, 0], peak / 2, rtol=1e-6)     # diagonal neighbour: ring 1
  np.testing.assert_allclose(q[0, 7, 8, 0], peak / 8, rtol=1e-6)     # ring 3


def test_local_mapping_loss_gradient_is_softmax_minus_target():
  """The paper's derivation (section III-D): d loss / d A = softmax(A) - Q, per map."""
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(6, 5, 2)), jnp.float32)
  points = jnp.asarray([[1.0, 2.0], [3.4, 0.2]])
  grad = jax.grad(lambda a: local_mapping_loss(a, points))(logits)
  expected = jax.nn.softmax(logits, axis=(0, 1)) - local_mapping_target(points, (6, 5))
  np.testing.assert_allclose(grad, expected, atol=1e-6)


def test_shape_indexed_pooling_equals_a_loop_and_its_gradient_lands_on_the_arg_max():
  rng = np.random.default_rng(2)
  features = rng.normal(size=(2, 16, 20, 3)).astype(np.float32)
  points = np.array([[[5.2, 7.9], [0.0, 0.0], [19.0, 15.0], [10.5, 3.5]],
                     [[2.4, 13.1], [17.7, 1.2], [9.0, 9.0], [-3.0, 30.0]]], np.float32)
  box = 6
  pooled = np.asarray(shape_indexed_pooling(jnp.asarray(features), jnp.asarray(points), box))
  expected = np.zeros((2, 4, 3), np.float32)
  argmax = []
  for b in range(2):
    for i, (x, y) in enumerate(points[b]):
      # The 6 x 6 block whose centre is nearest the point, inside the map.
      x0 = int(np.clip(np.round(x - 2.5), 0, 20 - box))
      y0 = int(np.clip(np.round(y - 2.5), 0, 16 - box))
      block = features[b, y0:y0 + box, x0:x0 + box]
      expected[b, i] = block.max(axis=(0, 1))
      for c in range(3):
        r, s = np.unravel_index(block[..., c].argmax(), (box, box))
        argmax.append((b, y0 + r, x0 + s, c))
  np.testing.assert_array_equal(pooled, expected)
  grad = np.asarray(jax.grad(lambda f: shape_indexed_pooling(f, jnp.asarray(points), box).sum())(
      jnp.asarray(features)))
  counts = np.zeros_like(grad)
  for index in argmax:
    counts[index] += 1
  np.testing.assert_array_equal(grad, counts)


def test_the_initial_shape_is_the_nearest_k_means_candidate():
  rng = np.random.default_rng(3)
  model = tiny(num_candidates=3)
  # Three well separated groups of shapes: the three centres are the groups' means.
  groups = [rng.uniform(0, 32, (L, 2)) for _ in range(3)]
  shapes = np.concatenate([g + rng.normal(scale=0.1, size=(20, L, 2)) for g in groups])
  frames, points = inputs()
  variables = model.fit_to_shapes(model.init_variables(frames, points), shapes)
  candidates = np.asarray(variables["batch_stats"]["candidates"])
  for g, members in zip(groups, np.split(shapes, 3)):
    found = np.abs(candidates - members.mean(0)).max(axis=(1, 2))
    assert found.min() < 1e-6, found
  out = model.apply(variables, frames, points)
  np.testing.assert_array_equal(
      out["initial_points"], nearest_candidate(out["rough_points"], candidates))
  rough = jnp.asarray(groups[1] + 3.0)
  np.testing.assert_array_equal(nearest_candidate(rough, candidates),
                                candidates[np.abs(candidates - groups[1]).max((1, 2)).argmin()])
  with pytest.raises(ValueError, match="num_candidates is 3 but the training data has only 2"):
    model.fit_to_shapes(variables, shapes[:2])
  # 'given' starts from z_0 (the mean shape on stills, the previous frame's when tracking).
  given = tiny(num_candidates=3, initialisation="given")
  np.testing.assert_array_equal(given.apply(variables, frames, points)["initial_points"], points)


def randomised(variables, seed=4):
  """Regressors away from their zero initialisation, so every step moves the shape and every
  parameter matters."""
  rng = np.random.default_rng(seed)
  params = dict(variables["params"])
  for name in ("regressor_weights", "regressor_biases"):
    params[name] = jnp.asarray(rng.normal(scale=0.01, size=params[name].shape), jnp.float32)
  return {**variables, "params": params}


@pytest.mark.parametrize("fields", [dict(), dict(recurrent_combine="concat", lstm_units=16),
                                    dict(recurrent_features=False), dict(num_steps=1),
                                    dict(regressor_fan_in_scaling=True)])
def test_the_scanned_cascade_equals_an_explicit_loop(fields):
  model = tiny(**fields)
  frames, points = inputs()
  variables = randomised(model.init_variables(frames, points))
  out = model.apply(variables, frames, points)
  params = variables["params"]
  features = ConvDeconv("vgg_s", 1 / 16).apply({"params": params["conv_deconv"]},
                                               frames[:, 0], False)
  shape = out["initial_points"][:, 0]
  lstm = nn.OptimizedLSTMCell(model.recurrent_size())
  carry = (jnp.zeros((2, model.recurrent_size())),) * 2
  for k in range(model.num_steps):
    f = shape_indexed_pooling(features, shape, model.box).reshape(2, -1)
    if model.recurrent_features:
      carry, h = lstm.apply({"params": params["cascade"]["lstm"]}, carry, f)
      f = f + h if model.recurrent_combine == "sum" else jnp.concatenate([f, h], -1)
    if model.regressor_fan_in_scaling:
      f = f / np.sqrt(f.shape[-1])
    delta = f @ params["regressor_weights"][k] + params["regressor_biases"][k]
    shape = shape + delta.reshape(shape.shape) * 32
    np.testing.assert_allclose(out["points"][k, :, 0], shape, atol=1e-4, err_msg=f"step {k}")
  assert out["points"].shape == (model.num_steps, 2, 1, L, 2)
  unrolled = model.clone(scan_unroll=model.num_steps).apply(variables, frames, points)
  np.testing.assert_allclose(unrolled["points"], out["points"], atol=1e-4)


def test_recurrent_sizes_follow_the_reading_of_eq_7():
  assert tiny().recurrent_size() == L * 6 == tiny().regressor_size()      # C = 96 / 16
  concat = tiny(recurrent_combine="concat", lstm_units=16)
  assert concat.recurrent_size() == 16 and concat.regressor_size() == L * 6 + 16
  assert tiny(recurrent_features=False).regressor_size() == L * 6


def test_gradients_reach_every_parameter_and_the_loss_has_both_terms():
  model = tiny()
  frames, points = inputs()
  variables = randomised(model.init_variables(frames, points))
  batch = {"landmarks": points + 1.0}

  def loss(params):
    out = model.apply({**variables, "params": params}, frames, points, train=True,
                      mutable=["batch_stats"])[0]
    total, terms = model.loss(out, batch, None)
    return total, terms
  grads, terms = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
  dead = [jax.tree_util.keystr(p) for p, g in jax.tree_util.tree_leaves_with_path(grads)
          if not np.any(np.asarray(g))]
  assert not dead, dead
  assert set(terms) == {"local_mapping", "regression"}
  assert np.isfinite(float(terms["local_mapping"])) and float(terms["regression"]) > 0
  assert model.confidence(model.apply(variables, frames, points)).shape == (2, 1)


def test_config_problems_name_the_field():
  problems = dict(build_model.__globals__["MODELS"]["drr"].config_problems(
      dict(backbone="vgg16", initialisation="kmeans", recurrent_combine="sum", lstm_units=8,
           num_steps=0, box=6, num_candidates=50, width=1.0), {"weights": {"shape": 1.0}}))
  assert set(problems) == {"model.backbone", "model.lstm_units", "model.num_steps",
                           "loss.weights"}


def test_a_tiny_stage_fits_the_candidates_trains_exports_and_tracks(tmp_path):
  """The trainer fits the k-means candidates to the training shapes before the first step;
  export, LandmarkModel and Tracker take DRR with no per-system code; `profile_steps` writes a
  trace."""
  import os  # pylint: disable=g-import-not-at-top
  from data_pipelines.face_crops import mean_shape_in_crop  # pylint: disable=g-import-not-at-top
  from data_pipelines.image_folders import normalise_to_box, read_image_folder  # pylint: disable=g-import-not-at-top
  from rednet_jax.inference.detection import Face  # pylint: disable=g-import-not-at-top
  from rednet_jax.inference.landmark_model import (Tracker, export_run_stage,  # pylint: disable=g-import-not-at-top
                                                   load_model)
  from rednet_jax.training import configs  # pylint: disable=g-import-not-at-top
  from rednet_jax.training.trainer import train_and_evaluate  # pylint: disable=g-import-not-at-top
  root = os.path.join(os.path.dirname(__file__), "fixtures", "ytf68_mini")
  c = configs.load_config("drr:vgg_s_128")
  c.data.update(root=root, train_split="train", eval_split="val", size=32, batch_size=4,
                samples_per_image=2, workers=0)
  c.model.update(width=1 / 16, num_steps=2, num_candidates=3)
  c.total_steps, c.log_every_steps, c.checkpoint_every_steps = 2, 1, 2
  c.profile_steps = (1, 1)
  c.eval.batch_size = 4
  c.outputs = ()
  # One device (half the compile time): the trainer on four is test_training.py's.
  c.mesh.num_devices = 1
  configs.validate(c)
  final = train_and_evaluate(c, str(tmp_path / "run"))["image"]
  # The profiler hook: a trace of step 1 (xprof reads *.xplane.pb).
  assert glob.glob(str(tmp_path / "run" / "image" / "profile" / "**" / "*.xplane.pb"),
                   recursive=True)
  assert np.isfinite(final["nme_io"]) and final["frames"] == 3
  # The refinement table: z_0 as the tracker gives it (the mean shape) and each of K = 2 steps.
  assert final["nme_io_step2"] == pytest.approx(final["nme_io"])
  assert np.isfinite(final["nme_io_step0"]) and "nme_io_step3" not in final
  # 68 points: the inter-pupil summary too (pupils lie inside the outer eye corners, so the
  # same distances over a shorter normaliser give a larger NME).
  assert final["frames"] == 3 and final["nme_ip"] > final["nme_io"]
  model = load_model(export_run_stage(str(tmp_path / "run"), "image", str(tmp_path / "export")))
  # Three training faces, three candidates: the candidates are the faces' shapes in the crop.
  shapes = np.stack([r.landmarks for r in read_image_folder(root, 68, "train")[0]])
  expected = mean_shape_in_crop(normalise_to_box(shapes), 32, 1.4)
  candidates = np.asarray(model.variables["batch_stats"]["candidates"])
  order = [np.abs(candidates - e).max(axis=(1, 2)).argmin() for e in expected]
  np.testing.assert_allclose(candidates[order], expected, atol=1e-3)
  frame = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
  tracker = Tracker(model, min_confidence=0.0)
  points, confidence = tracker.update(frame, face=Face(np.array([80.0, 60.0]), 50.0, 1.0))
  assert points.shape == (68, 2) and np.all(np.isfinite(points)) and 0 <= confidence <= 1


FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def torch_conv_indices(batch_norm):
  """torchvision vgg19(_bn)'s `features.<i>` index of each convolution."""
  indices, i = [], 0
  for stage in VGG19_STAGES:
    for _ in stage:
      indices.append(i)
      i += 3 if batch_norm else 2                  # conv, (BN,) ReLU
    i += 1                                         # max-pool
  return indices


@pytest.mark.parametrize("batch_norm", [True, False])
def test_torchvision_vgg19_loads_into_the_conv_deconv_network(batch_norm):
  model = tiny(backbone="vgg19", batch_norm=batch_norm)
  frames, points = inputs()
  variables = model.init_variables(frames, points)
  name = "vgg19_bn_w16" if batch_norm else "vgg19_w16"
  loaded = model.load_pretrained(variables, os.path.join(FIXTURES, f"{name}.pt"))
  ref = np.load(os.path.join(FIXTURES, f"{name}.npz"))
  net, stats = loaded["params"]["conv_deconv"], loaded["batch_stats"]
  names = VGG19_LAYER_NAMES
  assert len(names) == 16
  for layer, i in zip(names, torch_conv_indices(batch_norm)):
    np.testing.assert_array_equal(net[layer]["conv"]["kernel"],
                                  ref[f"features.{i}.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(net[layer]["conv"]["bias"], ref[f"features.{i}.bias"])
    if batch_norm:
      np.testing.assert_array_equal(net[layer]["bn"]["scale"], ref[f"features.{i + 1}.weight"])
      np.testing.assert_array_equal(stats["conv_deconv"][layer]["bn"]["var"],
                                    ref[f"features.{i + 1}.running_var"])
  # The layers VGG-19 does not have keep their initialisation, the candidates too.
  for key in ("conv8", "cascade", "regressor_weights"):
    same = jax.tree.map(np.array_equal, loaded["params"][key], variables["params"][key])
    assert all(jax.tree.leaves(same)), key
  assert all(jax.tree.leaves(jax.tree.map(
      np.array_equal, net["deconv6"], variables["params"]["conv_deconv"]["deconv6"])))
  np.testing.assert_array_equal(stats["candidates"], variables["batch_stats"]["candidates"])
  out = model.apply(loaded, frames, points)
  assert np.all(np.isfinite(np.asarray(out["points"])))


def test_vgg19_import_refuses_what_does_not_fit():
  frames, points = inputs()
  plain = tiny(backbone="vgg19")
  variables = plain.init_variables(frames, points)
  with pytest.raises(PretrainedWeightsError, match="batch_norm=True"):
    plain.load_pretrained(variables, os.path.join(FIXTURES, "vgg19_bn_w16.pt"))
  with pytest.raises(PretrainedWeightsError, match="expected the 16 of VGG-19"):
    plain.load_pretrained(variables, os.path.join(FIXTURES, "vgg16_w16.pt"))
  wide = tiny(backbone="vgg19", width=1 / 8)
  with pytest.raises(PretrainedWeightsError, match="conv1_1"):
    wide.load_pretrained(wide.init_variables(frames, points),
                         os.path.join(FIXTURES, "vgg19_w16.pt"))
  vgg_s = tiny()
  with pytest.raises(ValueError, match="backbone 'vgg19' only"):
    vgg_s.load_pretrained(vgg_s.init_variables(frames, points),
                          os.path.join(FIXTURES, "vgg19_w16.pt"))
