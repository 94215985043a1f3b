"""VGG weight import (VGG-16 into RED-Net's encoder; the reader for VGG-19 too): torch.save
state_dicts (read without PyTorch) and Keras HDF5 files."""

import collections
import os
import pickle
import zipfile

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rednet_jax.models.pretrained import (CAFFE_BGR_MEAN, IMAGENET_MEAN, IMAGENET_STD,
                                   VGG16_LAYER_NAMES, PretrainedWeightsError, load_vgg16_into_encoder,
                                   read_torch_state_dict, read_vgg_layers)
from test_rednet_v1 import init_variables, small_model

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TORCH_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
TORCH_BN_CONV_INDICES = (0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40)


@pytest.mark.parametrize("name", ["vgg16_w16", "vgg16_bn_w16", "vgg19_w16", "vgg19_bn_w16"])
def test_torch_reader_matches_the_tensors_torch_saved(name):
  state = read_torch_state_dict(os.path.join(FIXTURES, f"{name}.pt"))
  reference = np.load(os.path.join(FIXTURES, f"{name}.npz"))
  assert set(reference.files) <= set(state)
  for key in reference.files:
    np.testing.assert_array_equal(state[key], reference[key], err_msg=key)


@pytest.mark.parametrize("per_step_bn", [True, False])
def test_torchvision_vgg16_bn_loads_into_the_encoder(per_step_bn):
  model = small_model(bn_stats_per_step=per_step_bn)            # width 1/16, K = 2
  variables = init_variables(model)
  loaded = load_vgg16_into_encoder(variables, os.path.join(FIXTURES, "vgg16_bn_w16.pt"))
  ref = np.load(os.path.join(FIXTURES, "vgg16_bn_w16.npz"))
  encoder = loaded["params"]["spatial"]["encoder"]
  stats = loaded["batch_stats"]["spatial"]["encoder"]
  for name, i in zip(VGG16_LAYER_NAMES, TORCH_BN_CONV_INDICES):
    kernel = ref[f"features.{i}.weight"].transpose(2, 3, 1, 0)
    got = encoder[name]["conv"]["kernel"]
    if name == "conv1_1":   # image channels from VGG, the feedback channel starts at zero
      np.testing.assert_array_equal(got[:, :, :3], kernel)
      assert got.shape[2] == 4 and not np.any(got[:, :, 3:])
    else:
      np.testing.assert_array_equal(got, kernel)
    np.testing.assert_array_equal(encoder[name]["conv"]["bias"], ref[f"features.{i}.bias"])
    np.testing.assert_array_equal(encoder[name]["bn"]["scale"], ref[f"features.{i + 1}.weight"])
    mean = stats[name]["bn"]["mean"]
    assert mean.shape[0] == (model.num_steps if per_step_bn else mean.shape[0])
    np.testing.assert_array_equal(mean, np.broadcast_to(ref[f"features.{i + 1}.running_mean"],
                                                        mean.shape))
  # Nothing outside the encoder changed, and the result still runs through the model.
  untouched = jax.tree.map(np.array_equal, loaded["params"]["spatial"]["decoder"],
                           variables["params"]["spatial"]["decoder"])
  assert all(jax.tree.leaves(untouched))
  frames = jnp.zeros((1, 1, 64, 64, 3))
  out = jax.jit(model.apply)(loaded, frames, jnp.full((1, 1, 68, 2), 30.0))
  assert np.all(np.isfinite(np.asarray(out["logits"])))


def test_plain_vgg16_keeps_the_encoder_batchnorm_at_its_init():
  model = small_model()
  variables = init_variables(model)
  loaded = load_vgg16_into_encoder(variables, os.path.join(FIXTURES, "vgg16_w16.pt"))
  ref = np.load(os.path.join(FIXTURES, "vgg16_w16.npz"))
  enc = loaded["params"]["spatial"]["encoder"]
  for name, i in zip(VGG16_LAYER_NAMES[1:], TORCH_CONV_INDICES[1:]):
    np.testing.assert_array_equal(enc[name]["conv"]["kernel"],
                                  ref[f"features.{i}.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(enc[name]["bn"]["scale"],
                                  variables["params"]["spatial"]["encoder"][name]["bn"]["scale"])


def write_keras_vgg16(path, width, seed=0):
  """A Keras-2 `save_weights` HDF5 file with VGG-16's conv layers (random weights)."""
  rng = np.random.default_rng(seed)
  stages = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
  weights, cin = {}, 3
  with h5py.File(path, "w") as f:
    names = ["input_1"]
    f.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S")
    for s, stage in enumerate(stages, 1):
      for l, channels in enumerate(stage, 1):
        c = max(1, round(channels * width))
        name = f"block{s}_conv{l}"
        kernel = rng.normal(size=(3, 3, cin, c)).astype(np.float32)
        bias = rng.normal(size=(c,)).astype(np.float32)
        group = f.create_group(name)
        group.attrs["weight_names"] = np.array([f"{name}/kernel:0".encode(),
                                                f"{name}/bias:0".encode()])
        group[f"{name}/kernel:0"] = kernel
        group[f"{name}/bias:0"] = bias
        weights[name] = (kernel, bias)
        names.append(name)
        cin = c
      names.append(f"block{s}_pool")
      f.create_group(f"block{s}_pool").attrs["weight_names"] = np.array([], dtype="S")
    f.attrs["layer_names"] = np.array([n.encode() for n in names])
    f.attrs["backend"] = b"tensorflow"
  return weights


def conv2d_valid(x, kernel, bias):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias


def test_keras_caffe_style_weights_are_rewritten_for_our_input_normalisation(tmp_path):
  path = str(tmp_path / "vgg16_notop.h5")
  keras = write_keras_vgg16(path, 1 / 16)
  layers = read_vgg_layers(path)
  for name, layer in zip(VGG16_LAYER_NAMES[1:], layers[1:]):
    np.testing.assert_array_equal(layer["kernel"], keras[name.replace("conv", "block", 1)
                                                         .replace("_", "_conv", 1)][0])
  # The first conv on our normalised RGB equals Keras' conv on its BGR, 0-255, mean-free input
  # (away from the 1-pixel border, where zero padding means different colours).
  rgb01 = np.random.default_rng(1).uniform(size=(1, 12, 12, 3)).astype(np.float32)
  ours = (rgb01 - IMAGENET_MEAN) / IMAGENET_STD
  caffe = rgb01[..., ::-1] * 255.0 - CAFFE_BGR_MEAN
  expected = conv2d_valid(caffe, *keras["block1_conv1"])
  got = conv2d_valid(ours, layers[0]["kernel"], layers[0]["bias"])
  np.testing.assert_allclose(got[:, 1:-1, 1:-1], expected[:, 1:-1, 1:-1], rtol=1e-4, atol=1e-2)
  assert np.abs(np.asarray(expected)).max() > 10  # the comparison is not between zeros


def test_width_mismatch_names_the_file_and_layer(tmp_path):
  model = small_model(width=1 / 8)
  with pytest.raises(PretrainedWeightsError, match=r"vgg16_w16\.pt: conv1_1 .*check the model width"):
    load_vgg16_into_encoder(init_variables(model), os.path.join(FIXTURES, "vgg16_w16.pt"))


def test_bad_files_are_clear_errors(tmp_path):
  with pytest.raises(PretrainedWeightsError, match="no such file"):
    read_vgg_layers(str(tmp_path / "missing.pt"))
  not_zip = tmp_path / "legacy.pt"
  not_zip.write_bytes(b"\x80\x02 legacy pickle")
  with pytest.raises(PretrainedWeightsError, match="legacy.pt: not a zip-format"):
    read_vgg_layers(str(not_zip))
  # A pickle that asks for anything but tensors is refused, never executed.
  evil = tmp_path / "evil.pt"
  with zipfile.ZipFile(evil, "w") as z:
    z.writestr("evil/data.pkl", pickle.dumps(collections.Counter(a=1)))
  with pytest.raises(PretrainedWeightsError, match="refusing to unpickle collections.Counter"):
    read_torch_state_dict(str(evil))
  truncated = tmp_path / "few_layers.h5"
  with h5py.File(truncated, "w") as f:
    f.create_group("block1_conv1")
  with pytest.raises(PretrainedWeightsError, match="few_layers.h5: layer 'block1_conv1' lists"):
    read_vgg_layers(str(truncated))
  not_h5 = tmp_path / "text.h5"
  not_h5.write_text("hello")
  with pytest.raises(PretrainedWeightsError, match="text.h5: cannot read as HDF5"):
    read_vgg_layers(str(not_h5))
