"""Load ImageNet VGG-16 convolution weights from a user-supplied file into `VGG16Encoder`.

Supported files (nothing is downloaded; point the config at a local copy):
- a PyTorch `state_dict` saved with `torch.save` (torchvision `vgg16` or `vgg16_bn` layout:
  `features.<i>.weight/bias`, BN as `features.<i+1>.running_mean/...`). Read by a restricted
  unpickler that only rebuilds tensors, so PyTorch need not be installed and the file cannot run
  code.
- a Keras 2 HDF5 weights file (`block<s>_conv<l>` layers, e.g. the `..._notop.h5` of
  `keras.applications.VGG16`).

The encoder expects RGB in [0, 1] normalised with `IMAGENET_MEAN` / `IMAGENET_STD` (the
torchvision convention), so torchvision weights load as they are. Keras VGG-16 was converted from
Caffe and expects BGR, 0-255, minus a per-channel mean; its first convolution is rewritten to
take our input: channels reordered, scaled by 255*std, the mean difference folded into the bias
(exact except in the 1-pixel border, where zero padding differs between the two conventions).

The encoder's first convolution has more input channels than VGG (3 image + feedback channels):
the image part gets the VGG kernel, the extra channels start at zero, so the initial network is
exactly the ImageNet VGG on the image and learns to use the feedback.
"""

from __future__ import annotations

import collections
import os
import pickle
import zipfile
from typing import Any

import numpy as np

from rednet_jax.models.vgg import VGG16_STAGES

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # RGB, images in [0, 1]
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)  # Keras/Caffe VGG, 0-255 BGR

VGG16_LAYER_NAMES = tuple(f"conv{s}_{l}" for s, stage in enumerate(VGG16_STAGES, 1)
                          for l in range(1, len(stage) + 1))


class VGGWeightsError(ValueError):
  """A weights file that cannot be used; the message names the file and the problem."""


# ----------------------------------------------------------------------------- PyTorch reader
_TORCH_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
  def __init__(self, dtype):
    self.dtype = np.dtype(dtype)


def _rebuild_tensor(storage, offset, size, stride, *unused):
  itemsize = storage.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                         strides=tuple(s * itemsize for s in stride))
  return np.array(view)


class _StateDictUnpickler(pickle.Unpickler):
  """Rebuilds only tensors, dicts and plain values; anything else is refused."""

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: str):
    super().__init__(file)
    self._archive, self._prefix, self._path = archive, prefix, path

  def find_class(self, module, name):
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
      return lambda data, *unused: data
    if module == "torch" and name in _TORCH_STORAGE_DTYPES:
      return _StorageType(_TORCH_STORAGE_DTYPES[name])
    raise VGGWeightsError(f"{self._path}: refusing to unpickle {module}.{name}; expected a "
                          "plain state_dict of tensors (save model.state_dict(), not the model)")

  def persistent_load(self, pid):
    kind, storage_type, key, _location, numel = pid
    if kind != "storage" or not isinstance(storage_type, _StorageType):
      raise VGGWeightsError(f"{self._path}: unsupported storage record {pid!r}")
    raw = self._archive.read(f"{self._prefix}/data/{key}")
    return np.frombuffer(raw, dtype=storage_type.dtype, count=numel)


def read_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a `torch.save`d state_dict (zip format, PyTorch >= 1.6) into NumPy arrays."""
  if not zipfile.is_zipfile(path):
    raise VGGWeightsError(f"{path}: not a zip-format torch.save file (legacy pre-1.6 files are "
                          "not supported; re-save with a current PyTorch)")
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
      raise VGGWeightsError(f"{path}: expected one data.pkl in the archive, found {pickles}")
    prefix = pickles[0][:-len("/data.pkl")] if "/" in pickles[0] else ""
    byteorder = f"{prefix}/byteorder"
    if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
      raise VGGWeightsError(f"{path}: big-endian tensors are not supported")
    with archive.open(pickles[0]) as f:
      state = _StateDictUnpickler(f, archive, prefix, path).load()
  if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
    state = state["state_dict"]
  if not isinstance(state, dict):
    raise VGGWeightsError(f"{path}: top-level object is {type(state).__name__}, not a state_dict")
  return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, np.ndarray)}


def _torch_vgg_layers(state: dict[str, np.ndarray], path: str) -> list[dict[str, np.ndarray]]:
  """The 13 convolutions (and BN, if present) of a torchvision VGG-16 state_dict, in order."""
  conv_indices = sorted(int(k.split(".")[1]) for k, v in state.items()
                        if k.startswith("features.") and k.endswith(".weight") and v.ndim == 4)
  if len(conv_indices) != 13:
    raise VGGWeightsError(f"{path}: found {len(conv_indices)} convolution weights under "
                          "'features.*', expected the 13 of VGG-16")
  layers = []
  for i in conv_indices:
    kernel = state[f"features.{i}.weight"].astype(np.float32).transpose(2, 3, 1, 0)  # OIHW->HWIO
    layer = {"kernel": kernel, "bias": state[f"features.{i}.bias"].astype(np.float32)}
    bn = f"features.{i + 1}"
    if f"{bn}.running_mean" in state:
      layer.update(scale=state[f"{bn}.weight"], bn_bias=state[f"{bn}.bias"],
                   mean=state[f"{bn}.running_mean"], var=state[f"{bn}.running_var"])
    layers.append({k: np.asarray(v, np.float32) for k, v in layer.items()})
  return layers


def _keras_vgg_layers(path: str) -> list[dict[str, np.ndarray]]:
  import h5py  # pylint: disable=g-import-not-at-top
  layers = []
  try:
    with h5py.File(path, "r") as f:
      root = f["model_weights"] if "model_weights" in f else f
      for s, stage in enumerate(VGG16_STAGES, 1):
        for l in range(1, len(stage) + 1):
          name = f"block{s}_conv{l}"
          if name not in root:
            raise VGGWeightsError(f"{path}: no layer {name!r}; found {sorted(root.keys())[:20]}")
          group = root[name]
          names = [n.decode() if isinstance(n, bytes) else n
                   for n in group.attrs.get("weight_names", [])]
          kernel = [n for n in names if "kernel" in n]
          bias = [n for n in names if "bias" in n]
          if len(kernel) != 1 or len(bias) != 1:
            raise VGGWeightsError(f"{path}: layer {name!r} lists weights {names}, expected one "
                                  "kernel and one bias")
          layers.append({"kernel": np.asarray(group[kernel[0]], np.float32),
                         "bias": np.asarray(group[bias[0]], np.float32)})
  except OSError as e:
    raise VGGWeightsError(f"{path}: cannot read as HDF5 ({e})") from e
  return layers


def _caffe_first_conv_to_ours(kernel: np.ndarray, bias: np.ndarray):
  """Rewrites a BGR/0-255/mean-subtracted first conv to take RGB normalised by mean/std."""
  rgb = kernel[:, :, ::-1, :]                                     # input channels BGR -> RGB
  scale = (255.0 * IMAGENET_STD)[None, None, :, None]
  shift = 255.0 * IMAGENET_MEAN - CAFFE_BGR_MEAN[::-1]            # per RGB channel
  new_bias = bias + np.einsum("hwio,i->o", rgb, shift)
  return (rgb * scale).astype(np.float32), new_bias.astype(np.float32)


def read_vgg16_layers(path: str, source_format: str = "auto") -> list[dict[str, np.ndarray]]:
  """13 dicts (kernel HWIO, bias, optional BN scale/bn_bias/mean/var) in our input convention."""
  if not os.path.isfile(path):
    raise VGGWeightsError(f"{path}: no such file (VGG-16 weights are never downloaded; "
                          "give the path of a local copy)")
  if source_format == "auto":
    source_format = "keras_h5" if path.endswith((".h5", ".hdf5")) else "torch"
  if source_format == "torch":
    layers = _torch_vgg_layers(read_torch_state_dict(path), path)
  elif source_format == "keras_h5":
    layers = _keras_vgg_layers(path)
    layers[0]["kernel"], layers[0]["bias"] = _caffe_first_conv_to_ours(
        layers[0]["kernel"], layers[0]["bias"])
  else:
    raise ValueError(f"source_format must be 'auto', 'torch' or 'keras_h5', got {source_format!r}")
  if layers[0]["kernel"].shape[2] != 3:
    raise VGGWeightsError(f"{path}: first convolution takes {layers[0]['kernel'].shape[2]} "
                          "input channels, expected 3 (RGB)")
  return layers


def load_vgg16_into_encoder(variables: dict[str, Any], path: str, source_format: str = "auto",
                            encoder_path: tuple[str, ...] = ("spatial", "encoder")
                            ) -> dict[str, Any]:
  """Returns a copy of `variables` ({'params', 'batch_stats'}) with the encoder's 13
  convolutions (and BN, when the file has it) taken from the VGG-16 file at `path`.

  Per-step BN statistics (a leading K axis) all receive the file's statistics. Shapes must match
  the encoder's width exactly; a mismatch names the layer and both shapes.
  """
  import jax  # pylint: disable=g-import-not-at-top
  layers = read_vgg16_layers(path, source_format)
  variables = jax.tree.map(np.array, variables)  # host copy we may write into

  def subtree(collection):
    node = variables[collection]
    for key in encoder_path:
      node = node[key]
    return node

  params = subtree("params")
  stats = subtree("batch_stats") if "batch_stats" in variables else None
  for name, layer in zip(VGG16_LAYER_NAMES, layers):
    conv = params[name]["conv"]
    kernel = layer["kernel"]
    target = conv["kernel"].shape
    if name == "conv1_1":
      if kernel.shape[:2] != target[:2] or kernel.shape[3] != target[3] or target[2] < 3:
        raise VGGWeightsError(f"{path}: {name} kernel {kernel.shape} does not fit the encoder's "
                              f"{target} (3 image channels + feedback; check the model width)")
      kernel = np.concatenate(
          [kernel, np.zeros((*kernel.shape[:2], target[2] - 3, kernel.shape[3]), np.float32)], 2)
    if kernel.shape != target or layer["bias"].shape != conv["bias"].shape:
      raise VGGWeightsError(f"{path}: {name} has kernel {kernel.shape}, bias "
                            f"{layer['bias'].shape}; the encoder wants {target}, "
                            f"{conv['bias'].shape} (check the model width)")
    conv["kernel"], conv["bias"] = kernel, layer["bias"]
    if "scale" in layer:
      bn = params[name]["bn"]
      bn["scale"], bn["bias"] = layer["scale"], layer["bn_bias"]
      if stats is not None:
        for key, value in (("mean", layer["mean"]), ("var", layer["var"])):
          stats[name]["bn"][key] = np.broadcast_to(value, stats[name]["bn"][key].shape).copy()
  return variables
