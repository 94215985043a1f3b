"""models/conv.py: the convolution whose CPU gradient is built from canonical convolutions and
GEMMs computes XLA's gradient, inside loops too, and the switch back to XLA's works."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.test_util import check_grads

from rednet_jax.models import conv

DN = ("NHWC", "HWIO", "NHWC")
CASES = [  # input, kernel, strides, padding
    ((2, 9, 11, 3), (3, 3, 3, 4), (1, 1), "SAME"),
    ((2, 9, 11, 3), (7, 7, 3, 5), (2, 2), "SAME"),            # VGG-S conv1's kind
    ((2, 10, 10, 3), (3, 3, 3, 4), (2, 2), ((1, 0), (2, 1))),
    ((1, 8, 8, 2), (1, 1, 2, 3), (1, 1), "VALID"),
    ((2, 13, 12, 3), (4, 4, 3, 2), (3, 2), "VALID"),          # rows the last stride skips
    ((3, 6, 5, 4), (2, 2, 4, 6), (1, 1), ((1, 0), (0, 1))),   # DRR's parity convolutions
    ((2, 4, 4, 8), (3, 3, 8, 16), (1, 1), "SAME"),            # a small map: XLA's weight gradient
]


@pytest.fixture(autouse=True)
def small_maps_take_the_loop(monkeypatch):
  """The GEMM loop from 32 flat rows per image (the models: from 48 x 48 maps), so that these
  small maps exercise it; the 4 x 4 case (24 rows) still takes XLA's weight gradient."""
  monkeypatch.setattr(conv, "_LOOP_MIN_ROWS", 32)


def _xla(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=DN)


def _ours(x, w, strides, padding):
  return conv.conv_general_dilated(x, w, strides, padding, dimension_numbers=DN)


@pytest.mark.parametrize("patch_bytes", [conv._PATCH_BYTES, 256])   # one chunk / many chunks
@pytest.mark.parametrize("x_shape,w_shape,strides,padding", CASES)
def test_gradients_equal_xla(x_shape, w_shape, strides, padding, patch_bytes, monkeypatch):
  monkeypatch.setattr(conv, "_PATCH_BYTES", patch_bytes)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
  w = jnp.asarray(rng.normal(size=w_shape), jnp.float32)
  y = _ours(x, w, strides, padding)
  np.testing.assert_allclose(y, _xla(x, w, strides, padding), atol=1e-5)
  dy = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  ours = jax.vjp(lambda a, b: _ours(a, b, strides, padding), x, w)[1](dy)
  theirs = jax.vjp(lambda a, b: _xla(a, b, strides, padding), x, w)[1](dy)
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
  with jax.enable_x64(True):    # finite differences need float64
    check_grads(lambda a, b: _ours(a, b, strides, padding),
                (x.astype(jnp.float64), w.astype(jnp.float64)), order=1, modes=("rev",))


@pytest.mark.parametrize("x_shape,w_shape,strides,padding", [CASES[0], CASES[4]])
def test_bfloat16_gradients_match_xlas(x_shape, w_shape, strides, padding):
  """bfloat16 inputs (model.dtype='bfloat16'): ours sum in float32 and round once, XLA's
  convolutions work in bfloat16; both are within bfloat16 rounding of the float32 gradient
  (measured: 0.3-0.4 % of its largest entry)."""
  rng = np.random.default_rng(0)
  x, w = (jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in (x_shape, w_shape))
  dy = jnp.asarray(rng.normal(size=_xla(x, w, strides, padding).shape), jnp.float32)
  grads = {}
  for name, fn, dtype in (("ours", _ours, jnp.bfloat16), ("xla", _xla, jnp.bfloat16),
                          ("float32", _xla, jnp.float32)):
    vjp = jax.vjp(lambda a, b: fn(a, b, strides, padding), x.astype(dtype), w.astype(dtype))[1]
    grads[name] = jax.jit(vjp)(dy.astype(dtype))
  for ours, xla, exact in zip(grads["ours"], grads["xla"], grads["float32"]):
    assert ours.dtype == jnp.bfloat16
    scale = float(jnp.abs(exact).max())
    for g in (ours, xla):
      np.testing.assert_allclose(np.asarray(g, np.float32), exact, atol=0.01 * scale)


def test_the_cpu_gradient_is_gemms_and_the_switch_restores_xlas():
  """On CPU the weight gradient is a dot inside a loop and no convolution takes the kernel's
  place; under `xla_conv_gradients()` the gradient is XLA's (no dot)."""
  x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
  # A new function per trace: jit caches traces by function, and the switch is read in tracing.
  grad = lambda: jax.grad(lambda w: _ours(x, w, (1, 1), "SAME").sum())
  ours = jax.jit(grad()).lower(w).as_text()
  with conv.xla_conv_gradients():
    theirs = jax.jit(grad()).lower(w).as_text()
  assert "dot_general" in ours and "while" in ours
  assert "dot_general" not in theirs
  np.testing.assert_allclose(jax.jit(grad())(w), jax.grad(
      lambda w: _xla(x, w, (1, 1), "SAME").sum())(w), rtol=1e-5)


def test_maps_from_48_by_48_take_the_loop_by_default(monkeypatch):
  monkeypatch.undo()
  def lowered(size):
    x, w = jnp.ones((1, size, size, 4)), jnp.ones((3, 3, 4, 4))
    return jax.jit(jax.grad(lambda w: _ours(x, w, (1, 1), "SAME").sum())).lower(w).as_text()
  assert "while" not in lowered(40) and "while" in lowered(48)


def test_cpu_compiler_options_replace_ynnpack_fusions_with_xlas_kernels():
  """The project compiles its CPU programs with `cpu_compiler_options('cpu')`: the option exists
  in this XLA and takes the convolution and the dot out of YNNPACK fusions; the same values.
  Other platforms get no options, and `ynn_fusions=True` gives XLA's default."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 16, 16, 8)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 8, 8)), jnp.float32)
  f = lambda x, w: jnp.tanh(_xla(x, w, (1, 1), "SAME")).reshape(2, -1) @ jnp.ones((2048, 4))
  assert conv.cpu_compiler_options("gpu") == conv.cpu_compiler_options("cpu", True) == {}
  results, texts = [], []
  for options in (conv.cpu_compiler_options("cpu"), conv.cpu_compiler_options("cpu", True)):
    compiled = jax.jit(f, compiler_options=options).lower(x, w).compile()
    texts.append(compiled.as_text())
    results.append(compiled(x, w))
  assert "ynn_fusion" not in texts[0] and " convolution(" in texts[0] and " dot(" in texts[0]
  assert "ynn_fusion" in texts[1]
  np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-4)


def test_gradient_inside_a_rolled_scan():
  """Convolutions inside loops: the case XLA:CPU runs slowest; same values."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 8, 8, 4)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 4, 4)) * 0.2, jnp.float32)

  def loss(conv_fn, x, w):
    def body(h, _):
      h = jnp.tanh(conv_fn(h, w, (1, 1), "SAME"))
      return h, h.sum()
    return lax.scan(body, x, None, length=3)[1].sum()

  ours = jax.grad(lambda x, w: loss(_ours, x, w), argnums=(0, 1))(x, w)
  theirs = jax.grad(lambda x, w: loss(_xla, x, w), argnums=(0, 1))(x, w)
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_conv_module_is_nn_conv_with_the_same_parameters():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 6, 6, 3)), jnp.float32)
  ours, theirs = conv.Conv(5, (3, 3), strides=(2, 2)), nn.Conv(5, (3, 3), strides=(2, 2))
  variables = theirs.init(jax.random.key(0), x)
  assert jax.tree.structure(ours.init(jax.random.key(0), x)) == jax.tree.structure(variables)
  np.testing.assert_allclose(ours.apply(variables, x), theirs.apply(variables, x), atol=1e-5)
  grads = [jax.grad(lambda v, m=m: (m.apply(v, x) ** 2).sum())(variables) for m in (ours, theirs)]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), *grads)


@pytest.mark.parametrize("kwargs,message", [
    (dict(rhs_dilation=(2, 2)), "rhs_dilation"),
    (dict(feature_group_count=3), "feature_group_count"),
    (dict(dimension_numbers=("NCHW", "OIHW", "NCHW")), "dimension_numbers"),
])
def test_unsupported_arguments_are_refused_by_name(kwargs, message):
  kwargs = {"dimension_numbers": DN, **kwargs}
  with pytest.raises(ValueError, match=message):
    conv.conv_general_dilated(jnp.ones((1, 4, 4, 3)), jnp.ones((3, 3, 3, 3)), (1, 1), "SAME",
                              **kwargs)


def test_batch_sharded_gradients_over_four_devices(monkeypatch):
  """The weight gradient's loop keeps the batch sum outside it: with the batch split over 4
  devices, a cross-device sum inside loops deadlocked XLA:CPU (a RED-Net video stage on 4 fake
  devices). Two independent convolutions, many chunks, equal to XLA's gradient."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(conv, "_PATCH_BYTES", 4096)
  mesh = Mesh(np.array(jax.devices()[:4]), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(8, 32, 32, 4)), jnp.float32)
  w1, w2 = (jnp.asarray(rng.normal(size=(3, 3, 4, 4)), jnp.float32) for _ in range(2))

  def loss(conv_fn, x, w1, w2):
    return (conv_fn(x, w1, (1, 1), "SAME") ** 2).sum() + (conv_fn(x, w2, (1, 1), "SAME")).sum()

  by_batch, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
  ours = jax.jit(jax.grad(lambda *a: loss(_ours, *a), argnums=(1, 2)),
                 in_shardings=(by_batch, replicated, replicated))(x, w1, w2)
  theirs = jax.grad(lambda *a: loss(_xla, *a), argnums=(1, 2))(x, w1, w2)
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
