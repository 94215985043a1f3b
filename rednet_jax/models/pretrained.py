"""Load ImageNet VGG-16 convolution weights from a user-supplied file into `VGG16Encoder`, and
VGG-19's into DRR's conv-deconv network (`load_vgg19_into_drr`).

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

from rednet_jax.models.system import IMAGENET_MEAN, IMAGENET_STD
from rednet_jax.models.vgg import VGG16_STAGES, VGG19_STAGES

CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)  # Keras/Caffe VGG, 0-255 BGR


def vgg_layer_names(stages) -> tuple[str, ...]:
  """conv<stage>_<layer> for every convolution of a VGG (VGG-16: 13, VGG-19: 16)."""
  return tuple(f"conv{s}_{l}" for s, stage in enumerate(stages, 1)
               for l in range(1, len(stage) + 1))


VGG16_LAYER_NAMES = vgg_layer_names(VGG16_STAGES)
VGG19_LAYER_NAMES = vgg_layer_names(VGG19_STAGES)


class PretrainedWeightsError(ValueError):
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
    raise PretrainedWeightsError(f"{self._path}: refusing to unpickle {module}.{name}; expected a "
                          "plain state_dict of tensors (save model.state_dict(), not the model)")

  def persistent_load(self, pid):
    kind, storage_type, key, _location, numel = pid
    if kind != "storage" or not isinstance(storage_type, _StorageType):
      raise PretrainedWeightsError(f"{self._path}: unsupported storage record {pid!r}")
    raw = self._archive.read(f"{self._prefix}/data/{key}")
    return np.frombuffer(raw, dtype=storage_type.dtype, count=numel)


def read_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a `torch.save`d state_dict (zip format, PyTorch >= 1.6) into NumPy arrays."""
  if not zipfile.is_zipfile(path):
    raise PretrainedWeightsError(f"{path}: not a zip-format torch.save file (legacy pre-1.6 files are "
                          "not supported; re-save with a current PyTorch)")
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
      raise PretrainedWeightsError(f"{path}: expected one data.pkl in the archive, found {pickles}")
    prefix = pickles[0][:-len("/data.pkl")] if "/" in pickles[0] else ""
    byteorder = f"{prefix}/byteorder"
    if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
      raise PretrainedWeightsError(f"{path}: big-endian tensors are not supported")
    with archive.open(pickles[0]) as f:
      state = _StateDictUnpickler(f, archive, prefix, path).load()
  if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
    state = state["state_dict"]
  if not isinstance(state, dict):
    raise PretrainedWeightsError(f"{path}: top-level object is {type(state).__name__}, not a state_dict")
  return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, np.ndarray)}


def _torch_vgg_layers(state: dict[str, np.ndarray], path: str, stages=VGG16_STAGES
                      ) -> list[dict[str, np.ndarray]]:
  """The convolutions (and BN, if present) of a torchvision VGG state_dict, in order."""
  conv_indices = sorted(int(k.split(".")[1]) for k, v in state.items()
                        if k.startswith("features.") and k.endswith(".weight") and v.ndim == 4)
  expected = sum(map(len, stages))
  if len(conv_indices) != expected:
    raise PretrainedWeightsError(f"{path}: found {len(conv_indices)} convolution weights under "
                          f"'features.*', expected the {expected} of VGG-{expected + 3}")
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


def _keras_vgg_layers(path: str, stages=VGG16_STAGES) -> list[dict[str, np.ndarray]]:
  import h5py  # pylint: disable=g-import-not-at-top
  layers = []
  try:
    with h5py.File(path, "r") as f:
      root = f["model_weights"] if "model_weights" in f else f
      for s, stage in enumerate(stages, 1):
        for l in range(1, len(stage) + 1):
          name = f"block{s}_conv{l}"
          if name not in root:
            raise PretrainedWeightsError(f"{path}: no layer {name!r}; found {sorted(root.keys())[:20]}")
          group = root[name]
          names = [n.decode() if isinstance(n, bytes) else n
                   for n in group.attrs.get("weight_names", [])]
          kernel = [n for n in names if "kernel" in n]
          bias = [n for n in names if "bias" in n]
          if len(kernel) != 1 or len(bias) != 1:
            raise PretrainedWeightsError(f"{path}: layer {name!r} lists weights {names}, expected one "
                                  "kernel and one bias")
          layers.append({"kernel": np.asarray(group[kernel[0]], np.float32),
                         "bias": np.asarray(group[bias[0]], np.float32)})
  except OSError as e:
    raise PretrainedWeightsError(f"{path}: cannot read as HDF5 ({e})") from e
  return layers


def _caffe_first_conv_to_ours(kernel: np.ndarray, bias: np.ndarray):
  """Rewrites a BGR/0-255/mean-subtracted first conv to take RGB normalised by mean/std."""
  rgb = kernel[:, :, ::-1, :]                                     # input channels BGR -> RGB
  scale = (255.0 * IMAGENET_STD)[None, None, :, None]
  shift = 255.0 * IMAGENET_MEAN - CAFFE_BGR_MEAN[::-1]            # per RGB channel
  new_bias = bias + np.einsum("hwio,i->o", rgb, shift)
  return (rgb * scale).astype(np.float32), new_bias.astype(np.float32)


def read_vgg_layers(path: str, source_format: str = "auto", stages=VGG16_STAGES
                      ) -> list[dict[str, np.ndarray]]:
  """One dict per convolution (kernel HWIO, bias, optional BN scale/bn_bias/mean/var) in our
  input convention: 13 for VGG-16, 16 with `stages=VGG19_STAGES`."""
  if not os.path.isfile(path):
    raise PretrainedWeightsError(f"{path}: no such file (VGG weights are never downloaded; "
                          "give the path of a local copy)")
  if source_format == "auto":
    source_format = "keras_h5" if path.endswith((".h5", ".hdf5")) else "torch"
  if source_format == "torch":
    layers = _torch_vgg_layers(read_torch_state_dict(path), path, stages)
  elif source_format == "keras_h5":
    layers = _keras_vgg_layers(path, stages)
    layers[0]["kernel"], layers[0]["bias"] = _caffe_first_conv_to_ours(
        layers[0]["kernel"], layers[0]["bias"])
  else:
    raise ValueError(f"source_format must be 'auto', 'torch' or 'keras_h5', got {source_format!r}")
  if layers[0]["kernel"].shape[2] != 3:
    raise PretrainedWeightsError(f"{path}: first convolution takes {layers[0]['kernel'].shape[2]} "
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
  return _load_vgg(variables, path, source_format, encoder_path, VGG16_STAGES)


def load_vgg19_into_drr(variables: dict[str, Any], path: str, source_format: str = "auto",
                        network_path: tuple[str, ...] = ("conv_deconv",)) -> dict[str, Any]:
  """Returns a copy of DRR's `variables` with the 16 convolutions of its 'vgg19' conv-deconv
  network taken from a VGG-19 file at `path` (torchvision `vgg19` / `vgg19_bn` state_dict, or a
  Keras `block<s>_conv<l>` HDF5 file). A `vgg19_bn` file needs `model.batch_norm=True`; a plain
  `vgg19` file into a BN model leaves the BN layers at their initialisation (identity scale)."""
  return _load_vgg(variables, path, source_format, network_path, VGG19_STAGES)


def _load_vgg(variables, path, source_format, network_path, stages):
  import jax  # pylint: disable=g-import-not-at-top
  layers = read_vgg_layers(path, source_format, stages)
  variables = jax.tree.map(np.array, variables)  # host copy we may write into

  def subtree(collection):
    node = variables.get(collection, {})
    for key in network_path:
      node = node.get(key, {})
    return node

  params, stats = subtree("params"), subtree("batch_stats")   # stats: {} without BN
  for name, layer in zip(vgg_layer_names(stages), layers):
    conv = params[name]["conv"]
    kernel = layer["kernel"]
    target = conv["kernel"].shape
    if name == "conv1_1":   # extra input channels (RED-Net's feedback) start at zero
      if kernel.shape[:2] != target[:2] or kernel.shape[3] != target[3] or target[2] < 3:
        raise PretrainedWeightsError(f"{path}: {name} kernel {kernel.shape} does not fit the "
                              f"network's {target} (3 image channels + feedback; check the "
                              "model width)")
      kernel = np.concatenate(
          [kernel, np.zeros((*kernel.shape[:2], target[2] - 3, kernel.shape[3]), np.float32)], 2)
    if kernel.shape != target or layer["bias"].shape != conv["bias"].shape:
      raise PretrainedWeightsError(f"{path}: {name} has kernel {kernel.shape}, bias "
                            f"{layer['bias'].shape}; the network wants {target}, "
                            f"{conv['bias'].shape} (check the model width)")
    conv["kernel"], conv["bias"] = kernel, layer["bias"]
    if "scale" in layer:
      if "bn" not in params[name]:
        raise PretrainedWeightsError(f"{path}: the file has batch normalisation (a *_bn VGG) but "
                                     "the model has none; set model.batch_norm=True or give a "
                                     "VGG without BN")
      bn = params[name]["bn"]
      bn["scale"], bn["bias"] = layer["scale"], layer["bn_bias"]
      for key, value in (("mean", layer["mean"]), ("var", layer["var"])):
        if name in stats:
          stats[name]["bn"][key] = np.broadcast_to(value, stats[name]["bn"][key].shape).copy()
  return variables


def _torch_to_flax_kernel(weight: np.ndarray) -> np.ndarray:
  """torch Conv2d (out, in, kh, kw) -> flax (kh, kw, in, out)."""
  return np.transpose(weight, (2, 3, 1, 0)).astype(np.float32)


def load_torchvision_resnet(variables: dict[str, Any], path: str,
                            network_path: tuple[str, ...] = ("spatial", "network")
                            ) -> dict[str, Any]:
  """Returns a copy of `variables` with RED-Net v2's ResNet stem (C0) and encoder (C1..C4) taken
  from a torchvision ResNet `state_dict` at `path` (resnet50 / 101 / 152; read without PyTorch,
  as for VGG-16). torchvision's names map one-to-one: conv1/bn1 -> stem, layer{b}.{u}.conv{i} /
  bn{i} / downsample.{0,1} -> encoder/block{b}_unit{u}/conv{i} / bn{i} / downsample_conv /
  downsample_bn; fc is not used. The stem's extra input channels (feedback) start at zero.
  Per-step BN statistics all receive the file's statistics. Every encoder layer must be in the
  file with the encoder's shape; a mismatch names the layer and both shapes."""
  import jax  # pylint: disable=g-import-not-at-top
  state = read_torch_state_dict(path)
  variables = jax.tree.map(np.array, variables)

  def subtree(collection, *keys):
    node = variables[collection]
    for key in network_path + keys:
      node = node[key]
    return node

  has_stats = "batch_stats" in variables
  targets = [("stem", "conv1", "conv1"), ("stem", "bn1", "bn1")]
  encoder = subtree("params", "encoder")
  for unit_name, unit in encoder.items():
    block, index = unit_name.removeprefix("block").split("_unit")
    prefix = f"layer{block}.{index}"
    for layer in unit:
      torch_name = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(
          layer, layer)
      targets.append((f"encoder/{unit_name}", layer, f"{prefix}.{torch_name}"))
  used = set()
  for module_path, layer, torch_name in targets:
    keys = tuple(module_path.split("/")) + (layer,)
    params = subtree("params", *keys)
    if "kernel" in params:
      name = f"{torch_name}.weight"
      if name not in state:
        raise PretrainedWeightsError(f"{path}: no {name} (is it a torchvision ResNet of this depth?)")
      kernel = _torch_to_flax_kernel(state[name])
      target = params["kernel"].shape
      if keys == ("stem", "conv1") and kernel.shape[2] == 3 and target[2] > 3:
        kernel = np.concatenate(
            [kernel, np.zeros((*kernel.shape[:2], target[2] - 3, kernel.shape[3]), np.float32)], 2)
      if kernel.shape != target:
        raise PretrainedWeightsError(f"{path}: {name} has shape {kernel.shape} (as flax), the encoder "
                              f"wants {target} at {'/'.join(keys)} (check the model width)")
      params["kernel"] = kernel
      used.add(name)
    else:
      for ours, theirs in (("scale", "weight"), ("bias", "bias")):
        value = state.get(f"{torch_name}.{theirs}")
        if value is None or value.shape != params[ours].shape:
          raise PretrainedWeightsError(f"{path}: {torch_name}.{theirs} missing or of another shape "
                                f"than {'/'.join(keys)}/{ours} {params[ours].shape}")
        params[ours] = value.astype(np.float32)
      if has_stats:
        stats = subtree("batch_stats", *keys)
        for ours, theirs in (("mean", "running_mean"), ("var", "running_var")):
          stats[ours] = np.broadcast_to(state[f"{torch_name}.{theirs}"],
                                        stats[ours].shape).astype(np.float32).copy()
  return variables
