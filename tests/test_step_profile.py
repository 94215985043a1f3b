"""benchmarks/step_profile.py's bookkeeping: which work an XLA operation is, and self times."""

import os
import sys
import types

import jax
import jax.numpy as jnp

from rednet_jax.models import conv

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import step_profile  # pylint: disable=wrong-import-position


def test_a_compiled_convolution_gradient_splits_into_its_two_halves():
  x, w = jnp.ones((2, 32, 32, 3)), jnp.ones((3, 3, 3, 4))
  loss = lambda x, w: conv.conv_general_dilated(x, w, (1, 1), "SAME").sum()
  hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile().as_text()
  kinds = {step_profile.category(*v) for v in step_profile.hlo_index(hlo).values()}
  assert {"convolution input gradient", "convolution weight gradient"} <= kinds
  forward = jax.jit(loss).lower(x, w).compile().as_text()
  assert "convolution forward" in {step_profile.category(*v)
                                   for v in step_profile.hlo_index(forward).values()}


def test_categories_and_layers_from_op_names():
  category, layer = step_profile.category, step_profile.layer
  name = "jit(train_step)/transpose(jvp(RedNetV1))/closed_call/spatial/decoder/deconv1_1/cond/"
  assert category(name + "branch_0_fun/weight_gradient/while/body/closed_call/dot_general",
                  False) == "convolution weight gradient"
  assert category("jit(train_step)/jvp(RedNetV1)/closed_call/spatial/reduce_max",
                  False) == "forward: reduce_max"
  assert category("jit(train_step)/transpose(jvp(RedNetV1))/shape/conv1/conv/conv_general_dilated",
                  True) == "convolution, other (XLA's backward, or fused)"
  assert category("jit(train_step)/sgd/add", False) == "update and the rest"
  assert layer(name + "branch_0_fun/input_gradient/conv_general_dilated") == (
      "spatial/decoder/deconv1_1")


def test_self_time_excludes_nested_operations():
  event = lambda name, start, duration: types.SimpleNamespace(
      start_ns=start, duration_ns=duration, stats=[("hlo_op", name)])
  line = types.SimpleNamespace(events=[
      event("while.1", 0, 10e6), event("dot.2", 1e6, 3e6), event("dot.3", 5e6, 2e6),
      event("copy.4", 12e6, 1e6),
      types.SimpleNamespace(start_ns=0, duration_ns=50e6, stats=[])])   # not an operation
  plane = types.SimpleNamespace(lines=[line])
  assert dict(step_profile.self_times(plane)) == {"while.1": 5.0, "dot.2": 3.0, "dot.3": 2.0,
                                                 "copy.4": 1.0}
