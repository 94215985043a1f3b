"""RED-Net v1: scan vs explicit loop, chunked video vs one clip, gradients, parameter counts,
stage-to-stage parameter names (4 devices vs 1: test_train_step.py)."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rednet_jax.models.targets import render_label_map
from rednet_jax.models.heads import ShapeRegressionHead, zero_lstm_carry
from rednet_jax.models import build_model
from rednet_jax.models.rednet_v1 import RedNetV1
from rednet_jax.models.system import parameter_count

L = 68
SMALL = dict(name="rednet_v1", num_landmarks=L, width=1 / 16, num_steps=2, scan_unroll=2,
             lstm_hidden=8)


def small_model(**overrides):
  return build_model({**SMALL, **overrides})


def clip_batch(b=2, t=3, size=64, seed=0):
  rng = np.random.default_rng(seed)
  frames = rng.normal(size=(b, t, size, size, 3)).astype(np.float32)
  base = rng.uniform(0.25 * size, 0.75 * size, size=(L, 2))
  init = base + rng.normal(scale=2.0, size=(b, t, L, 2))
  return jnp.asarray(frames), jnp.asarray(init, jnp.float32)


def variable_shapes(model, b=2, t=3, size=64):
  frames = jax.ShapeDtypeStruct((b, t, size, size, 3), jnp.float32)
  init = jax.ShapeDtypeStruct((b, t, L, 2), jnp.float32)
  return jax.eval_shape(lambda f, p: model.init({"params": jax.random.key(0),
                                                 "dropout": jax.random.key(0)}, f, p),
                        frames, init)


@functools.lru_cache(maxsize=None)
def init_variables(model, b=2, t=3, size=64):
  """He-normal kernels, zero biases, unit BN, drawn on the host from the model's variable tree.

  XLA:CPU needs ~12 s to compile `model.init` (dozens of threefry draws); tests that only need
  some valid weights use this; `System.init_variables` (test_train_step.py, the trainer tests)
  runs the real one.
  """
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    name = path[-1].key
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.normal(size=leaf.shape) * np.sqrt(2.0 / fan_in), leaf.dtype)
    if name in ("scale", "var"):
      return jnp.ones(leaf.shape, leaf.dtype)
    return jnp.zeros(leaf.shape, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, variable_shapes(model, b, t, size))


def calibrate_batch_stats(model, variables, seed=1):
  """Running statistics equal to one batch's statistics (BN momentum 0), so eval-mode
  comparisons run through realistic, non-trivial normalisation."""
  frames, init = clip_batch(seed=seed)
  calibrating = model.clone(bn_momentum=0.0)
  _, new = jax.jit(lambda v: calibrating.apply(v, frames, init, train=True,
                                               mutable=["batch_stats"],
                                               rngs={"dropout": jax.random.key(seed)}))(variables)
  return {**variables, "batch_stats": new["batch_stats"]}


@pytest.mark.parametrize("per_step_bn, temporal, num_steps",
                         [(True, True, 2), (False, False, 2), (True, True, 1)])
def test_scan_equals_explicit_python_loop_over_the_same_weights(per_step_bn, temporal, num_steps):
  # num_steps=1 takes the no-scan path (see RedNetV1.__call__); same variables, same results.
  model = small_model(bn_stats_per_step=per_step_bn, use_temporal=temporal, num_steps=num_steps)
  variables = calibrate_batch_stats(model, init_variables(model))
  frames, init = clip_batch(seed=3)
  carry = model.initial_carry(2)
  if temporal:  # non-zero incoming carry, as in the middle of a video
    carry = jax.tree.map(lambda a: a + 0.3, carry)
  out, updated = jax.jit(lambda v: model.apply(v, frames, init, carry, train=True,
                                               mutable=["batch_stats"]))(variables)

  step = model.spatial_step(train=True)
  params = variables["params"]["spatial"]
  stats = stats_in = variables["batch_stats"]["spatial"]
  lstm = carry if temporal else zero_lstm_carry((model.num_steps, 0), 0)
  points, logits_ref, points_ref, stats_ref = init, [], [], []

  @jax.jit
  def one_step(step_stats, points, xs):
    return step.apply({"params": params, "batch_stats": step_stats}, (points, None), xs, frames,
                      mutable=["batch_stats"])

  for k, square in enumerate(model.square_sizes()):
    step_stats = jax.tree.map(lambda a: a[k], stats) if per_step_bn else stats
    ((points, _), (logits, _, _)), new = one_step(
        step_stats, points, (jnp.int32(square), jax.tree.map(lambda a: a[k], lstm)))
    logits_ref.append(logits)
    points_ref.append(points)
    if per_step_bn:
      stats_ref.append(new["batch_stats"])
    else:
      stats = new["batch_stats"]  # shared statistics are updated step after step
  np.testing.assert_allclose(out["logits"], jnp.stack(logits_ref), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out["points"], jnp.stack(points_ref), atol=1e-3)
  expected_stats = (jax.tree.map(lambda *a: jnp.stack(a), *stats_ref) if per_step_bn else stats)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6),
               updated["batch_stats"]["spatial"], expected_stats)

  # Inference: running statistics are read, not carried or updated.
  out = jax.jit(lambda v: model.apply(v, frames, init, carry))(variables)
  eval_step = model.spatial_step(train=False)
  points = init
  for k, square in enumerate(model.square_sizes()):
    step_stats = jax.tree.map(lambda a: a[k], stats_in) if per_step_bn else stats_in
    (points, _), (logits, _, _) = jax.jit(eval_step.apply)(
        {"params": params, "batch_stats": step_stats}, (points, None),
        (jnp.int32(square), jax.tree.map(lambda a: a[k], lstm)), frames)
    np.testing.assert_allclose(out["logits"][k], logits, rtol=1e-4, atol=1e-4)


def test_feedback_of_step_k_is_the_label_map_of_step_k_minus_1_points():
  model = small_model(use_temporal=False)
  variables = init_variables(model)
  frames, init = clip_batch(seed=4)
  step = model.spatial_step(train=False)
  step_vars = {"params": variables["params"]["spatial"],
               "batch_stats": jax.tree.map(lambda a: a[1], variables["batch_stats"]["spatial"])}
  out = jax.jit(model.apply)(variables, frames, init)
  # Re-running step 2 from step 1's points reproduces step 2's logits; from z_0 it does not.
  apply_step = jax.jit(step.apply)      # op by op: ~220 small XLA programs (~7 s)
  (_, (logits2, _, _)) = apply_step(step_vars, (out["points"][0], None),
                                    (jnp.int32(5), zero_lstm_carry((0,), 0)), frames)
  np.testing.assert_allclose(logits2, out["logits"][1], rtol=1e-4, atol=1e-4)
  (_, (wrong, _, _)) = apply_step(step_vars, (init, None),
                                  (jnp.int32(5), zero_lstm_carry((0,), 0)), frames)
  assert np.abs(np.asarray(wrong) - np.asarray(out["logits"][1])).max() > 1e-3
  # The map fed to step 2 has squares of side 5 around step 1's rounded points.
  labels = render_label_map(out["points"][0], (64, 64), 5)
  assert labels.max() <= L and (labels > 0).sum() > 0


def test_long_clip_equals_chunks_with_carry_passed_through():
  model = small_model(use_temporal=True)
  frames, init = clip_batch(b=2, t=6, seed=5)
  variables = calibrate_batch_stats(model, init_variables(model))
  apply = jax.jit(lambda v, f, p, c: model.apply(v, f, p, c))
  full = apply(variables, frames, init, model.initial_carry(2))
  first = apply(variables, frames[:, :3], init[:, :3], model.initial_carry(2))
  second = apply(variables, frames[:, 3:], init[:, 3:], first["carry"])
  np.testing.assert_allclose(jnp.concatenate([first["logits"], second["logits"]], axis=2),
                             full["logits"], rtol=1e-4, atol=1e-4)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-5),
               second["carry"], full["carry"])
  # The carry matters: restarting the second chunk from zeros changes its output.
  restarted = apply(variables, frames[:, 3:], init[:, 3:], model.initial_carry(2))
  assert np.abs(np.asarray(restarted["logits"]) - np.asarray(second["logits"])).max() > 1e-4


def full_model_loss(model, variables, frames, init, rng):
  out, _ = model.apply(variables, frames, init, train=True, mutable=["batch_stats"],
                       rngs={"dropout": rng})
  target = render_label_map(init, frames.shape[2:4], 3)
  ce = optax.softmax_cross_entropy_with_integer_labels(out["logits"], target[None]).mean()
  identity = optax.softmax_cross_entropy_with_integer_labels(
      out["identity_logits"], jnp.zeros(out["identity_logits"].shape[:2], jnp.int32)).mean()
  shape = jnp.mean(out["shape_residual"] ** 2)
  return ce + identity + shape


def test_gradients_reach_every_parameter():
  model = small_model(use_temporal=True, use_identity=True, num_identities=5,
                      use_shape_regression=True)
  variables = init_variables(model)
  frames, init = clip_batch(seed=6)
  grads = jax.jit(jax.grad(lambda p: full_model_loss(
      model, {**variables, "params": p}, frames, init, jax.random.key(1))))(variables["params"])
  flat = flax.traverse_util.flatten_dict(grads, sep="/")
  dead = [k for k, g in flat.items() if not np.any(np.asarray(g) != 0)]
  assert not dead, f"parameters without gradient: {dead}"
  assert all(np.all(np.isfinite(np.asarray(g))) for g in flat.values())


def test_shape_head_reads_encoder_features_through_stop_gradient():
  head = ShapeRegressionHead(num_landmarks=5, width=1 / 16)
  rng = np.random.default_rng(0)
  response = jnp.asarray(rng.normal(size=(2, 32, 32, 6)), jnp.float32)
  features = {"conv2_2": jnp.asarray(rng.normal(size=(2, 16, 16, 8)), jnp.float32),
              "conv4_3": jnp.asarray(rng.normal(size=(2, 4, 4, 32)), jnp.float32)}
  variables = jax.jit(lambda r, f: head.init(jax.random.key(0), r, f, train=False))(
      response, features)
  apply = jax.jit(lambda r, f: head.apply(variables, r, f, train=False))
  loss = lambda r, f: jnp.sum(apply(r, f) ** 2)
  grad_response, grad_features = jax.jit(jax.grad(loss, argnums=(0, 1)))(response, features)
  assert np.any(np.asarray(grad_response) != 0)        # the response map is trained by f_REG
  assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(grad_features))
  # ...while the features do change the output (they are used, not ignored).
  shifted = {k: v + 1.0 for k, v in features.items()}
  assert np.abs(apply(response, shifted) - apply(response, features)).max() > 1e-3


def vgg_conv_params(cin_first):
  channels = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
  total, cin = 0, cin_first
  for c in channels:
    total += 9 * cin * c + c
    cin = c
  return total


def test_parameter_counts_at_width_one_follow_the_vgg16_arithmetic():
  model = RedNetV1(num_landmarks=68, width=1.0, num_steps=3, use_temporal=True,
                   use_identity=True, num_identities=105, use_shape_regression=True)
  shapes = variable_shapes(model, b=1, t=2, size=128)
  count = parameter_count
  spatial = shapes["params"]["spatial"]
  encoder_convs = count({k: v["conv"] for k, v in spatial["encoder"].items()})
  assert vgg_conv_params(3) == 14_714_688                    # VGG-16's 13 convolutions
  assert encoder_convs == vgg_conv_params(4)                 # + the label-map input channel
  bn = 2 * sum([64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512])
  assert count(spatial["encoder"]) == encoder_convs + bn
  decoder = [(512, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 256),
             (256, 256), (256, 256), (256, 128), (128, 128), (128, 64), (64, 64)]
  decoder_expected = sum(9 * a * b + b + 2 * b for a, b in decoder) + 9 * 64 * 69 + 69
  assert count(spatial["decoder"]) == decoder_expected
  lstm = 4 * (256 * 256) + 4 * (256 * 256 + 256) + (256 * 256 + 256)   # LSTM + projection
  assert count(spatial["temporal"]) == lstm
  assert count(shapes["params"]["identity"]) == 256 * 105 + 105
  stages = [(69, 64), (64 + 128, 64), (64, 256), (256 + 512, 256), (256, 512)]
  assert count(shapes["params"]["shape"]) == (sum(9 * a * b + 3 * b for a, b in stages)
                                              + 512 * 136 + 136)
  # Per-step BN running statistics: K copies of every encoder/decoder BN mean and variance.
  assert jax.tree.leaves(shapes["batch_stats"]["spatial"])[0].shape[0] == 3


def test_stages_share_parameter_names_and_shapes():
  def tree(**fields):
    v = variable_shapes(small_model(**fields), b=1, t=1)
    return {k: a.shape for k, a in flax.traverse_util.flatten_dict(v, sep="/").items()}

  image = tree(use_shape_regression=True)
  identity = tree(use_shape_regression=True, use_identity=True, num_identities=4)
  video = tree(use_shape_regression=True, use_identity=True, num_identities=4, use_temporal=True)
  for earlier, later in ((image, identity), (identity, video)):
    assert all(later.get(k) == s for k, s in earlier.items())
  assert {k.split("/")[1] for k in set(identity) - set(image)} == {"identity"}
  assert {k.split("/")[2] for k in set(video) - set(identity)} == {"temporal"}


def test_bad_inputs_and_configs_are_clear_errors():
  model = small_model()
  frames, init = clip_batch()
  with pytest.raises(ValueError, match="divisible by 32"):
    model.init(jax.random.key(0), frames[:, :, :48, :48], init)
  with pytest.raises(ValueError, match=r"\(B, T, H, W, 3\)"):
    model.init(jax.random.key(0), frames[:, 0], init)
  with pytest.raises(ValueError, match="init_points"):
    model.init(jax.random.key(0), frames, init[:, :, :5])
  with pytest.raises(ValueError, match="no field"):
    build_model({**SMALL, "num_stepz": 3})
  with pytest.raises(ValueError, match="unknown model"):
    build_model({"name": "rednet_v9"})


def test_bfloat16_compute_keeps_float32_outputs_and_tracks_float32():
  model32 = small_model(use_shape_regression=True)
  model16 = small_model(use_shape_regression=True, dtype="bfloat16")  # as a config gives it
  variables = calibrate_batch_stats(model32, init_variables(model32))
  frames, init = clip_batch(seed=8)
  out32 = jax.jit(model32.apply)(variables, frames, init)
  out16 = jax.jit(model16.apply)(variables, frames, init)
  assert out16["logits"].dtype == jnp.float32 and out16["shape_residual"].dtype == jnp.float32
  probs32 = jax.nn.softmax(out32["logits"][0], -1)
  probs16 = jax.nn.softmax(out16["logits"][0], -1)
  assert float(jnp.abs(probs32 - probs16).mean()) < 0.02


def test_any_size_divisible_by_32_including_non_square():
  model = small_model(use_temporal=True, use_identity=True, num_identities=2,
                      use_shape_regression=True)
  frames = jax.ShapeDtypeStruct((2, 3, 64, 96, 3), jnp.float32)
  init = jax.ShapeDtypeStruct((2, 3, L, 2), jnp.float32)
  variables = variable_shapes(model, size=64)
  out = jax.eval_shape(lambda v, f, p: model.apply(v, f, p), variables, frames, init)
  assert out["logits"].shape == (2, 2, 3, 64, 96, L + 1)
  assert out["shape_residual"].shape == (2, 3, L, 2)
  assert out["carry"][0].shape == (2, 2, 8)


def test_residual_temporal_module_starts_as_the_model_without_it():
  """temporal_residual=True (not the paper's setting): with its zero-initialised projection, a
  video-stage model computes exactly what the identity-stage model it was built from computes;
  the paper's replacing f_tRNN does not."""
  frames, init = clip_batch()
  before = small_model()
  variables = calibrate_batch_stats(before, init_variables(before))
  expected = jax.jit(before.apply)(variables, frames, init)["logits"]
  for residual in (True, False):
    after = small_model(use_temporal=True, temporal_residual=residual)
    fresh = after.init_variables(frames, init, seed=1)
    merged = {col: flax.traverse_util.unflatten_dict({
        **flax.traverse_util.flatten_dict(fresh[col]),
        **flax.traverse_util.flatten_dict(variables[col])}) for col in ("params", "batch_stats")}
    logits = jax.jit(after.apply)(merged, frames, init)["logits"]
    if residual:
      np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    else:
      assert not np.allclose(logits, expected, atol=1e-3)
