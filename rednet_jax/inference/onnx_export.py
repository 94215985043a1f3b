"""ONNX export of a model's inference function, and an onnxruntime `LandmarkModel`.

`jax_to_onnx` is a small jaxpr -> ONNX converter: it traces a function with `jax.make_jaxpr`
at the example arguments' shapes, inlines calls (`jit`, `custom_jvp_call`, `custom_vjp_call`
(the primal function), `remat`, `closed_call`, a `cond` on a constant), unrolls `scan`, folds
what depends only on the weights into constants, and maps the remaining lax primitives to
ONNX operators (float32 / int32 / int8 / uint8 / bool). Anything else -- a primitive, a
parameter form or a dtype it has no rule for, a `while` loop -- raises NotImplementedError
naming it: there is no silent fallback. Choices where ONNX differs from XLA:
- `conv_general_dilated` is Conv on NC... / OI... layouts reached by Transposes; an input
  dilation (a transposed convolution) is ConvTranspose when the window strides are 1, the
  padding fits ConvTranspose's and the kernel is a constant, else the input is zero-interleaved
  (Reshape / Pad / Reshape) before a Conv.
- `gather` is Gather when it takes whole slices along one axis, else GatherND on the full index
  of every element of the windows; `scatter-*` is ScatterND (reduction add / mul / min / max,
  hence opset 18). Out-of-bounds indices follow the primitive's mode: gathers clamp (and fill
  for FILL_OR_DROP), scatters drop (into a padding row cut off afterwards) or clamp (CLIP).
- `reduce_window_max` is MaxPool over the windowed axes, the others merged into N and C.
- A float division by a constant or a broadcast value is a multiplication by its reciprocal,
  as XLA:CPU compiles it (a Div differs by an ulp, enough to move a cluster centroid at x.5 to
  the other side of the label map's rounding).
- `expm1` and `log1p` are Exp - 1 and Log(1 + x) (absolute error ~1e-7 near 0).

`export_landmark_model` writes a LandmarkModel's inference function for a fixed batch size as
`model.onnx` beside its `model.json`; `load_onnx_model` / `OnnxLandmarkModel` run such a folder
with onnxruntime behind LandmarkModel's interface (`Tracker`, `predict`, `predict_folder`).
`check_against_jax` compares the two on given crops. CLI: `experiments/export.py --format=onnx`.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import json
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.extend import core as jcore

from rednet_jax.inference.landmark_model import MODEL_FILE, LandmarkModel

ONNX_FILE = "model.onnx"
# 18: ScatterND's min / max reductions (segment_min-style scatters) and Reduce* taking axes as
# an input throughout.
DEFAULT_OPSET = 18
# An equation whose inputs are all constants is evaluated at export time when its output has at
# most this many elements or no more than its inputs (weights, BatchNorm scales, iotas);
# larger ones (a broadcast of a constant to an activation's shape) stay operators.
FOLD_LIMIT = 1 << 12
_INSTALL_HINT = "pip install rednet-jax[onnx] (in a clone: pip install -e '.[onnx]')"
# int8: max_pool_with_argmax's window indices.
_DTYPES = ("float32", "int32", "int8", "uint8", "bool")


def _import_onnx():
  try:
    import onnx  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"ONNX export needs the onnx package: {_INSTALL_HINT}") from e
  return onnx


def _import_onnxruntime():
  try:
    import onnxruntime  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"running an ONNX model needs onnxruntime: {_INSTALL_HINT}") from e
  return onnxruntime


def _describe(params: dict) -> str:
  shown = {k: v for k, v in params.items()
           if not isinstance(v, (jcore.Jaxpr, jcore.ClosedJaxpr)) and not callable(v)}
  text = repr(shown)
  return text if len(text) < 600 else text[:600] + "..."


def _unsupported(eqn, why: str = "") -> NotImplementedError:
  return NotImplementedError(
      f"ONNX export: primitive {eqn.primitive.name!r}{' (' + why + ')' if why else ''} is not "
      f"supported; params {_describe(eqn.params)}")


def _aval(eqn, i: int = 0):
  aval = eqn.outvars[i].aval
  return tuple(aval.shape), np.dtype(aval.dtype)


def _i64(values) -> np.ndarray:
  return np.asarray(values, np.int64).reshape(-1)


class _Converter:
  """Walks jaxprs and appends ONNX nodes. A value is the name of an ONNX tensor (str) or a
  constant known at export time (np.ndarray), which becomes an initializer when a node uses
  it (deduplicated by identity, then by content)."""

  def __init__(self, opset: int):
    onnx = _import_onnx()
    self.onnx, self.helper, self.opset = onnx, onnx.helper, opset
    self.nodes, self.initializers = [], []
    self.shapes: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    self._by_id: dict[int, str] = {}
    self._by_content: dict[tuple, str] = {}
    self._alive: list[Any] = []          # keeps arrays whose id() is a cache key alive
    self._numpy: dict[int, np.ndarray] = {}
    self._memo: dict[tuple, tuple] = {}
    self._counts = collections.Counter()
    self.broadcasts: dict[str, Any] = {}  # Expand outputs -> their input (same rank)

  # -- values ----------------------------------------------------------------------------------

  def onnx_type(self, dtype) -> int:
    dtype = np.dtype(dtype)
    if dtype.name not in _DTYPES + ("int64",):
      raise NotImplementedError(f"ONNX export: dtype {dtype} is not supported (only "
                                f"{', '.join(_DTYPES)})")
    return self.helper.np_dtype_to_tensor_dtype(dtype)

  def fresh(self, hint: str) -> str:
    self._counts[hint] += 1
    return f"{hint}.{self._counts[hint]}"

  def numpy(self, x) -> np.ndarray:
    """A constant (jax or numpy array, Python scalar) as numpy, the same object each time."""
    if isinstance(x, np.ndarray):
      return x
    key = id(x)
    if key not in self._numpy:
      self._alive.append(x)
      self._numpy[key] = np.asarray(x)
    return self._numpy[key]

  def ref(self, value) -> str:
    if isinstance(value, str):
      return value
    array = value
    name = self._by_id.get(id(array))
    if name is not None:
      return name
    self.onnx_type(array.dtype)
    array_c = np.asarray(array, order="C")  # (ascontiguousarray makes 0-d 1-d)
    key = (array.dtype.str, array.shape, hashlib.sha1(array_c.tobytes()).digest())
    name = self._by_content.get(key)
    if name is None:
      name = self.fresh("const")
      self.initializers.append(self.onnx.numpy_helper.from_array(array_c, name))
      self.shapes[name] = (tuple(array.shape), array.dtype)
      self._by_content[key] = name
    self._by_id[id(array)] = name
    self._alive.append(array)
    return name

  def shape(self, value) -> tuple[int, ...]:
    return tuple(value.shape) if isinstance(value, np.ndarray) else self.shapes[value][0]

  def dtype(self, value) -> np.dtype:
    return value.dtype if isinstance(value, np.ndarray) else self.shapes[value][1]

  def emit(self, op: str, inputs: Sequence, shape, dtype, **attrs) -> str:
    return self.emit_multi(op, inputs, [(shape, dtype)], **attrs)[0]

  def emit_multi(self, op: str, inputs: Sequence, outputs: Sequence, **attrs) -> list[str]:
    names = ["" if v is None else self.ref(v) for v in inputs]
    outs = [self.fresh(op.lower()) for _ in outputs]
    self.nodes.append(self.helper.make_node(op, names, outs, name=outs[0], **attrs))
    for out, (shape, dtype) in zip(outs, outputs):
      self.shapes[out] = (tuple(int(d) for d in shape), np.dtype(dtype))
    return outs

  def memo(self, key: tuple, inputs: Sequence, compute: Callable[[], Any]):
    """compute(), cached under `key` (which holds id()s of `inputs`, kept alive here)."""
    try:
      hit = self._memo.get(key)
    except TypeError:                  # unhashable parameters: no caching
      return compute()
    if hit is None:
      hit = (tuple(inputs), compute())
      self._memo[key] = hit
    return hit[1]

  # -- shape helpers that fold constants -------------------------------------------------------

  def transpose(self, x, perm):
    perm = tuple(int(p) for p in perm)
    if perm == tuple(range(len(perm))):
      return x
    if isinstance(x, np.ndarray):
      return self.memo(("transpose", id(x), perm), [x], lambda: np.transpose(x, perm))
    shape = self.shape(x)
    return self.emit("Transpose", [x], [shape[p] for p in perm], self.dtype(x), perm=list(perm))

  def reshape(self, x, shape):
    shape = tuple(int(d) for d in shape)
    if self.shape(x) == shape:
      return x
    if isinstance(x, np.ndarray):
      return self.memo(("reshape", id(x), shape), [x], lambda: x.reshape(shape))
    return self.emit("Reshape", [x, _i64(shape)], shape, self.dtype(x))

  def cast(self, x, dtype):
    dtype = np.dtype(dtype)
    if self.dtype(x) == dtype:
      return x
    if isinstance(x, np.ndarray):
      return self.memo(("cast", id(x), dtype.str), [x], lambda: x.astype(dtype))
    return self.emit("Cast", [x], self.shape(x), dtype, to=self.onnx_type(dtype))

  def slice(self, x, starts, ends, axes, steps=None):
    shape = list(self.shape(x))
    steps = steps or [1] * len(axes)
    if isinstance(x, np.ndarray):
      index = [slice(None)] * len(shape)
      for s, e, a, st in zip(starts, ends, axes, steps):
        index[a] = slice(s, e if e >= 0 or st > 0 else None, st)
      return x[tuple(index)]
    for s, e, a, st in zip(starts, ends, axes, steps):
      shape[a] = len(range(*slice(s, e if e >= 0 or st > 0 else None, st).indices(shape[a])))
    return self.emit("Slice", [x, _i64(starts), _i64(ends), _i64(axes), _i64(steps)], shape,
                     self.dtype(x))

  def concat(self, values, axis: int):
    if len(values) == 1:
      return values[0]
    if all(isinstance(v, np.ndarray) for v in values):
      return np.concatenate(values, axis)
    shape = list(self.shape(values[0]))
    shape[axis] = sum(self.shape(v)[axis] for v in values)
    return self.emit("Concat", values, shape, self.dtype(values[0]), axis=axis)

  def binary(self, op: str, a, b, dtype=None):
    shape = np.broadcast_shapes(self.shape(a), self.shape(b))
    return self.emit(op, [a, b], shape, dtype or self.dtype(a))

  def where(self, condition, a, b):
    shape = np.broadcast_shapes(self.shape(condition), self.shape(a), self.shape(b))
    return self.emit("Where", [condition, a, b], shape, self.dtype(a))

  def pad(self, x, low, high, value=None):
    """Pads (negative: crops) each axis; `value` a scalar (default 0)."""
    shape = self.shape(x)
    axes = [a for a in range(len(shape)) if low[a] < 0 or high[a] < 0]
    if axes:
      x = self.slice(x, [max(-low[a], 0) for a in axes],
                     [shape[a] - max(-high[a], 0) for a in axes], axes)
      shape = self.shape(x)
    low, high = [max(v, 0) for v in low], [max(v, 0) for v in high]
    if not any(low) and not any(high):
      return x
    value = np.zeros((), self.dtype(x)) if value is None else value
    out = [s + lo + hi for s, lo, hi in zip(shape, low, high)]
    return self.emit("Pad", [x, _i64(low + high), value], out, self.dtype(x), mode="constant")

  def interleave(self, x, factors, value=None):
    """x with factors[a] - 1 copies of `value` (default 0) after every element of axis a: each
    axis grows from n to n * factors[a] (the caller drops the trailing factors[a] - 1)."""
    shape = self.shape(x)
    split = []
    for n, f in zip(shape, factors):
      split += [n, 1] if f > 1 else [n]
    x = self.reshape(x, split)
    low, high, i = [0] * len(split), [0] * len(split), 0
    for f in factors:
      if f > 1:
        high[i + 1] = f - 1
        i += 1
      i += 1
    x = self.pad(x, low, high, value)
    return self.reshape(x, [n * f for n, f in zip(shape, factors)])

  # -- jaxprs ----------------------------------------------------------------------------------

  def run(self, jaxpr, consts: Sequence, args: Sequence) -> list:
    if isinstance(jaxpr, jcore.ClosedJaxpr):
      jaxpr, consts = jaxpr.jaxpr, list(jaxpr.consts) + list(consts)
    env = {}

    def read(var):
      if isinstance(var, jcore.Literal):
        return np.asarray(var.val, dtype=var.aval.dtype)
      return env[var]

    for var, value in zip(jaxpr.constvars, consts):
      env[var] = value if isinstance(value, str) else self.numpy(value)
    for var, value in zip(jaxpr.invars, args):
      env[var] = value if isinstance(value, str) else self.numpy(value)
    for eqn in jaxpr.eqns:
      outs = self.equation(eqn, [read(v) for v in eqn.invars])
      for var, value in zip(eqn.outvars, outs):
        if not isinstance(var, jcore.DropVar):
          env[var] = value
    return [read(v) for v in jaxpr.outvars]

  def equation(self, eqn, ins: list) -> list:
    name = eqn.primitive.name
    for var in list(eqn.outvars) + [v for v in eqn.invars if not isinstance(v, jcore.Literal)]:
      dtype = getattr(var.aval, "dtype", None)
      if dtype is None or np.dtype(dtype).name not in _DTYPES:
        raise _unsupported(eqn, f"dtype {dtype}")
    if name in _CALLS:
      return _CALLS[name](self, eqn, ins)
    if eqn.effects:                    # callbacks, prints: nothing to fold or convert
      raise _unsupported(eqn, "side effects")
    if all(isinstance(v, np.ndarray) for v in ins) and self._foldable(eqn, ins):
      return self.fold(eqn, ins)
    rule = _RULES.get(name)
    if rule is None:
      raise _unsupported(eqn)
    outs = rule(self, eqn, ins)
    for var, value in zip(eqn.outvars, outs):
      expected = (tuple(var.aval.shape), np.dtype(var.aval.dtype))
      got = (self.shape(value), self.dtype(value))
      assert got == expected, (name, got, expected)
    return outs

  def _foldable(self, eqn, ins) -> bool:
    size_in = sum(v.size for v in ins)
    size_out = sum(int(np.prod(v.aval.shape)) for v in eqn.outvars)
    return size_out <= max(size_in, FOLD_LIMIT)

  def fold(self, eqn, ins) -> list:
    """The equation evaluated at export time: exact operations in numpy, the rest by JAX on
    the CPU (the same implementation of e.g. rsqrt as the jitted model's)."""
    def compute():
      fast = _NUMPY_FOLDS.get(eqn.primitive.name)
      out = fast(*ins, **eqn.params) if fast is not None else None
      if out is None:
        with jax.default_device(jax.devices("cpu")[0]):
          out = eqn.primitive.bind(*ins, **eqn.params)
      out = out if eqn.primitive.multiple_results else [out]
      return [np.asarray(o).astype(v.aval.dtype) for o, v in zip(out, eqn.outvars)]
    key = (eqn.primitive, tuple(sorted(eqn.params.items())), tuple(id(v) for v in ins))
    return self.memo(key, ins, compute)


def _np_broadcast_in_dim(x, *, shape, broadcast_dimensions, **_):
  inner = [1] * len(shape)
  for i, d in enumerate(broadcast_dimensions):
    inner[d] = x.shape[i]
  return np.broadcast_to(x.reshape(inner), shape)


def _np_iota(*, dtype, shape, dimension, **_):
  line = np.arange(shape[dimension], dtype=dtype)
  return np.broadcast_to(line.reshape([-1 if a == dimension else 1 for a in range(len(shape))]),
                         shape)


def _np_convert(x, *, new_dtype, **_):
  if np.issubdtype(x.dtype, np.floating) and not np.issubdtype(np.dtype(new_dtype), np.floating):
    return None                          # NaN / out of range: XLA's conversion rules
  return x.astype(new_dtype)


def _np_select_n(which, *cases, **_):
  return np.choose(which.astype(np.int32), np.broadcast_arrays(*cases))


def _np_slice(x, *, start_indices, limit_indices, strides, **_):
  strides = strides or (1,) * x.ndim
  return x[tuple(slice(a, b, c) for a, b, c in zip(start_indices, limit_indices, strides))]


# Constant folding in numpy where it is exact (the same bits as XLA); None: use JAX.
_NUMPY_FOLDS: dict[str, Callable] = {
    "broadcast_in_dim": _np_broadcast_in_dim, "convert_element_type": _np_convert,
    "reshape": lambda x, *, new_sizes, dimensions, **_: (x.reshape(new_sizes)
                                                         if dimensions is None else None),
    "squeeze": lambda x, *, dimensions, **_: np.squeeze(x, tuple(dimensions)),
    "transpose": lambda x, *, permutation, **_: np.transpose(x, permutation),
    "concatenate": lambda *xs, dimension, **_: np.concatenate(xs, dimension),
    "slice": _np_slice, "select_n": _np_select_n, "iota": _np_iota,
    "add": lambda a, b, **_: np.add(a, b), "sub": lambda a, b, **_: np.subtract(a, b),
    "mul": lambda a, b, **_: np.multiply(a, b), "neg": lambda a, **_: np.negative(a),
    "max": lambda a, b, **_: np.maximum(a, b), "min": lambda a, b, **_: np.minimum(a, b),
    "eq": lambda a, b, **_: np.equal(a, b), "ne": lambda a, b, **_: np.not_equal(a, b),
    "lt": lambda a, b, **_: np.less(a, b), "le": lambda a, b, **_: np.less_equal(a, b),
    "gt": lambda a, b, **_: np.greater(a, b), "ge": lambda a, b, **_: np.greater_equal(a, b),
    "and": lambda a, b, **_: np.bitwise_and(a, b), "or": lambda a, b, **_: np.bitwise_or(a, b),
    "not": lambda a, **_: np.invert(a),
}


# -- calls and control flow ------------------------------------------------------------------------

def _call(param: str):
  def rule(cv: _Converter, eqn, ins):
    return cv.run(eqn.params[param], [], ins)
  return rule


def _call_any(cv: _Converter, eqn, ins):
  for param in ("call_jaxpr", "jaxpr", "fun_jaxpr"):
    if param in eqn.params:
      return cv.run(eqn.params[param], [], ins)
  raise _unsupported(eqn, "no jaxpr parameter")


def _identity(cv: _Converter, eqn, ins):
  return list(ins)


def _scan(cv: _Converter, eqn, ins):
  p = eqn.params
  n_consts, n_carry, length = p["num_consts"], p["num_carry"], int(p["length"])
  if length < 1:
    raise _unsupported(eqn, "length 0")
  consts, carry, xs = ins[:n_consts], ins[n_consts:n_consts + n_carry], ins[n_consts + n_carry:]
  ys_steps = [None] * length
  for i in (reversed(range(length)) if p["reverse"] else range(length)):
    x_i = [_index_first(cv, x, i) for x in xs]
    outs = cv.run(p["jaxpr"], [], list(consts) + list(carry) + x_i)
    carry, ys_steps[i] = outs[:n_carry], outs[n_carry:]
  ys = [_stack(cv, [step[j] for step in ys_steps], 0) for j in range(len(ys_steps[0]))]
  return list(carry) + ys


def _index_first(cv: _Converter, x, i: int):
  if isinstance(x, np.ndarray):
    return cv.memo(("index", id(x), i), [x], lambda: np.asarray(x[i]))
  return cv.emit("Gather", [x, np.asarray(i, np.int64)], cv.shape(x)[1:], cv.dtype(x), axis=0)


def _stack(cv: _Converter, values: list, axis: int):
  if all(isinstance(v, np.ndarray) for v in values):
    return np.stack(values, axis)
  shape = list(cv.shape(values[0]))
  expanded = [cv.reshape(v, shape[:axis] + [1] + shape[axis:]) for v in values]
  return cv.concat(expanded, axis)


def _cond(cv: _Converter, eqn, ins):
  index, operands = ins[0], ins[1:]
  if not isinstance(index, np.ndarray):
    raise _unsupported(eqn, "the branch index depends on the inputs; only a constant index "
                       "is inlined")
  branches = eqn.params["branches"]
  return cv.run(branches[int(np.clip(index, 0, len(branches) - 1))], [], operands)


def _while(cv: _Converter, eqn, ins):
  raise _unsupported(eqn, "while loops are not converted; use a fixed-length lax.scan")


_CALLS: dict[str, Callable] = {
    "jit": _call("jaxpr"), "pjit": _call("jaxpr"), "closed_call": _call_any,
    "core_call": _call_any, "custom_jvp_call": _call_any, "custom_vjp_call": _call_any,
    "custom_vjp_call_jaxpr": _call_any, "remat": _call("jaxpr"), "remat2": _call("jaxpr"),
    "checkpoint": _call("jaxpr"), "scan": _scan, "cond": _cond, "while": _while,
}

# -- primitives ------------------------------------------------------------------------------------

_RULES: dict[str, Callable] = {}


def _rule(*names: str):
  def register(fn):
    for name in names:
      _RULES[name] = fn
    return fn
  return register


_UNARY = {"neg": "Neg", "exp": "Exp", "log": "Log", "tanh": "Tanh", "logistic": "Sigmoid",
          "sqrt": "Sqrt", "abs": "Abs", "sign": "Sign", "floor": "Floor", "ceil": "Ceil",
          "sin": "Sin", "cos": "Cos", "erf": "Erf"}
_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "max": "Max", "min": "Min", "pow": "Pow"}
_COMPARE = {"eq": "Equal", "lt": "Less", "le": "LessOrEqual", "gt": "Greater",
            "ge": "GreaterOrEqual"}

for _name, _op in _UNARY.items():
  _RULES[_name] = lambda cv, eqn, ins, op=_op: [cv.emit(op, ins, *_aval(eqn))]
for _name, _op in _BINARY.items():
  _RULES[_name] = lambda cv, eqn, ins, op=_op: [cv.emit(op, ins, *_aval(eqn))]
for _name, _op in _COMPARE.items():
  _RULES[_name] = lambda cv, eqn, ins, op=_op: [cv.emit(op, ins, *_aval(eqn))]
_rule("stop_gradient", "copy", "copy_p", "optimization_barrier", "sharding_constraint")(_identity)


@_rule("ne")
def _ne(cv, eqn, ins):
  shape, dtype = _aval(eqn)
  return [cv.emit("Not", [cv.emit("Equal", ins, shape, dtype)], shape, dtype)]


@_rule("div")
def _div(cv, eqn, ins):
  shape, dtype = _aval(eqn)
  a, b = ins
  if dtype != np.float32:
    return [cv.emit("Div", ins, shape, dtype)]      # integers: truncation, as XLA
  # XLA:CPU turns a division by a constant or a broadcast (explicit, or a size-1 axis of the
  # divisor) into a multiplication by the reciprocal, 1 ulp apart from a division; the same
  # here keeps later roundings (label-map centres at x.5) identical.
  if isinstance(b, np.ndarray):
    inverse = cv.memo(("reciprocal", id(b)), [b],
                      lambda: np.asarray(np.float32(1) / b, np.float32))
  elif b in cv.broadcasts or cv.shape(b) != shape:
    small = cv.broadcasts.get(b, b)
    inverse = cv.emit("Reciprocal", [small], cv.shape(small), dtype)
  else:
    return [cv.emit("Div", ins, shape, dtype)]
  out = cv.binary("Mul", a, inverse)
  if cv.shape(out) != shape:
    out = cv.emit("Expand", [out, _i64(shape)], shape, dtype)
  return [out]


@_rule("rem")
def _rem(cv, eqn, ins):
  return [cv.emit("Mod", ins, *_aval(eqn), fmod=1)]      # C fmod: the dividend's sign


@_rule("and", "or", "xor", "not")
def _logical(cv, eqn, ins):
  shape, dtype = _aval(eqn)
  op = eqn.primitive.name.capitalize()
  return [cv.emit(op if dtype == np.bool_ else "Bitwise" + op, ins, shape, dtype)]


@_rule("round")
def _round(cv, eqn, ins):
  shape, dtype = _aval(eqn)
  (x,) = ins
  if int(eqn.params["rounding_method"]) == 1:           # TO_NEAREST_EVEN
    return [cv.emit("Round", [x], shape, dtype)]
  half = cv.binary("Add", cv.emit("Abs", [x], shape, dtype), np.asarray(0.5, dtype))
  return [cv.binary("Mul", cv.emit("Sign", [x], shape, dtype),
                    cv.emit("Floor", [half], shape, dtype))]


@_rule("rsqrt")
def _rsqrt(cv, eqn, ins):
  shape, dtype = _aval(eqn)
  return [cv.emit("Reciprocal", [cv.emit("Sqrt", ins, shape, dtype)], shape, dtype)]


@_rule("expm1")
def _expm1(cv, eqn, ins):
  shape, dtype = _aval(eqn)
  return [cv.binary("Sub", cv.emit("Exp", ins, shape, dtype), np.asarray(1, dtype))]


@_rule("log1p")
def _log1p(cv, eqn, ins):
  shape, dtype = _aval(eqn)
  return [cv.emit("Log", [cv.binary("Add", ins[0], np.asarray(1, dtype))], shape, dtype)]


@_rule("exp2")
def _exp2(cv, eqn, ins):
  shape, dtype = _aval(eqn)
  return [cv.emit("Pow", [np.asarray(2, dtype), ins[0]], shape, dtype)]


@_rule("square")
def _square(cv, eqn, ins):
  return [cv.emit("Mul", [ins[0], ins[0]], *_aval(eqn))]


@_rule("integer_pow")
def _integer_pow(cv, eqn, ins):
  shape, dtype = _aval(eqn)
  y, x = int(eqn.params["y"]), ins[0]
  if y == 0:
    return [cv.emit("Expand", [np.ones((), dtype), _i64(shape)], shape, dtype)]
  result, base, n = None, x, abs(y)
  while n:                                                # exponentiation by squaring
    if n & 1:
      result = base if result is None else cv.emit("Mul", [result, base], shape, dtype)
    n >>= 1
    if n:
      base = cv.emit("Mul", [base, base], shape, dtype)
  if y < 0:
    result = cv.emit("Reciprocal", [result], shape, dtype)
  return [result]


@_rule("is_finite")
def _is_finite(cv, eqn, ins):
  shape, dtype = _aval(eqn)
  bad = cv.emit("Or", [cv.emit("IsNaN", ins, shape, dtype), cv.emit("IsInf", ins, shape, dtype)],
                shape, dtype)
  return [cv.emit("Not", [bad], shape, dtype)]


@_rule("clamp")
def _clamp(cv, eqn, ins):
  low, x, high = ins
  shape, dtype = _aval(eqn)
  return [cv.emit("Min", [cv.emit("Max", [x, low], shape, dtype), high], shape, dtype)]


@_rule("convert_element_type")
def _convert(cv, eqn, ins):
  return [cv.cast(ins[0], eqn.params["new_dtype"])]


@_rule("reduce_precision")
def _reduce_precision(cv, eqn, ins):
  if (eqn.params["exponent_bits"], eqn.params["mantissa_bits"]) != (8, 23):
    raise _unsupported(eqn)
  return list(ins)


@_rule("select_n")
def _select_n(cv, eqn, ins):
  which, cases = ins[0], ins[1:]
  if cv.dtype(which) == np.bool_:
    return [cv.where(which, cases[1], cases[0])] if len(cases) == 2 else [cases[0]]
  result = cases[-1]
  for i in reversed(range(len(cases) - 1)):
    chosen = cv.binary("Equal", which, np.asarray(i, cv.dtype(which)), np.bool_)
    result = cv.where(chosen, cases[i], result)
  return [result]


# -- shapes ----------------------------------------------------------------------------------------

@_rule("reshape", "squeeze", "expand_dims")
def _reshape(cv, eqn, ins):
  if eqn.primitive.name == "reshape" and eqn.params.get("dimensions") is not None:
    raise _unsupported(eqn, "reshape with dimensions")
  return [cv.reshape(ins[0], _aval(eqn)[0])]


@_rule("broadcast_in_dim")
def _broadcast_in_dim(cv, eqn, ins):
  shape = tuple(eqn.params["shape"])
  x = ins[0]
  inner = [1] * len(shape)
  for i, d in enumerate(eqn.params["broadcast_dimensions"]):
    inner[d] = cv.shape(x)[i]
  x = cv.reshape(x, inner)
  if tuple(inner) == shape:
    return [x]
  out = cv.emit("Expand", [x, _i64(shape)], shape, cv.dtype(x))
  cv.broadcasts[out] = x
  return [out]


@_rule("transpose")
def _transpose(cv, eqn, ins):
  return [cv.transpose(ins[0], eqn.params["permutation"])]


@_rule("concatenate")
def _concatenate(cv, eqn, ins):
  return [cv.concat(ins, int(eqn.params["dimension"]))]


@_rule("stack")
def _stack_rule(cv, eqn, ins):
  return [_stack(cv, ins, int(eqn.params["axis"]))]


@_rule("slice")
def _slice(cv, eqn, ins):
  p = eqn.params
  shape = cv.shape(ins[0])
  strides = p["strides"] or (1,) * len(shape)
  axes = [a for a in range(len(shape))
          if (p["start_indices"][a], p["limit_indices"][a], strides[a]) != (0, shape[a], 1)]
  if not axes:
    return [ins[0]]
  return [cv.slice(ins[0], [int(p["start_indices"][a]) for a in axes],
                   [int(p["limit_indices"][a]) for a in axes], axes,
                   [int(strides[a]) for a in axes])]


@_rule("rev")
def _rev(cv, eqn, ins):
  axes = [int(a) for a in eqn.params["dimensions"]]
  if not axes:
    return [ins[0]]
  big = np.iinfo(np.int64).min
  return [cv.slice(ins[0], [-1] * len(axes), [big] * len(axes), axes, [-1] * len(axes))]


@_rule("pad")
def _pad(cv, eqn, ins):
  x, value = ins
  low, high, interior = (list(map(int, c)) for c in zip(*eqn.params["padding_config"]))
  if any(interior):
    x = cv.interleave(x, [i + 1 for i in interior], value)
    high = [h - i for h, i in zip(high, interior)]
  return [cv.pad(x, low, high, value)]


@_rule("split")
def _split(cv, eqn, ins):
  sizes = [int(s) for s in eqn.params["sizes"]]
  axis = int(eqn.params["axis"])
  return cv.emit_multi("Split", [ins[0], _i64(sizes)], [_aval(eqn, i) for i in range(len(sizes))],
                       axis=axis)


@_rule("tile")
def _tile(cv, eqn, ins):
  reps = [int(r) for r in eqn.params["reps"]]
  if all(r == 1 for r in reps):
    return [ins[0]]
  return [cv.emit("Tile", [ins[0], _i64(reps)], *_aval(eqn))]


@_rule("iota")
def _iota(cv, eqn, ins):
  shape, dtype = _aval(eqn)        # (only reached when too large to fold)
  dimension = int(eqn.params["dimension"])
  line = np.arange(shape[dimension], dtype=dtype).reshape(
      [-1 if a == dimension else 1 for a in range(len(shape))])
  return [cv.emit("Expand", [line, _i64(shape)], shape, dtype)]


# -- reductions ------------------------------------------------------------------------------------

_REDUCE = {"reduce_sum": "ReduceSum", "reduce_max": "ReduceMax", "reduce_min": "ReduceMin",
           "reduce_prod": "ReduceProd", "reduce_and": "ReduceMin", "reduce_or": "ReduceMax"}


@_rule(*_REDUCE)
def _reduce(cv, eqn, ins):
  shape, dtype = _aval(eqn)
  axes = [int(a) for a in eqn.params["axes"]]
  if not axes:
    return [ins[0]]
  x = ins[0]
  if eqn.primitive.name in ("reduce_and", "reduce_or") and dtype != np.bool_:
    raise _unsupported(eqn, "bitwise reduction of integers")
  if dtype == np.bool_:                        # and / or over bools: min / max over 0 / 1
    x = cv.cast(x, np.int32)
  out = cv.emit(_REDUCE[eqn.primitive.name], [x, _i64(axes)], shape, cv.dtype(x), keepdims=0)
  return [cv.cast(out, dtype)]


@_rule("argmax", "argmin")
def _argmax(cv, eqn, ins):
  shape, dtype = _aval(eqn)
  axes = eqn.params["axes"]
  if len(axes) != 1:
    raise _unsupported(eqn, "more than one axis")
  op = "ArgMax" if eqn.primitive.name == "argmax" else "ArgMin"
  # Both give the first index of the extreme value, as XLA.
  index = cv.emit(op, ins, shape, np.int64, axis=int(axes[0]), keepdims=0, select_last_index=0)
  return [cv.cast(index, dtype)]


@_rule("cumsum")
def _cumsum(cv, eqn, ins):
  return [cv.emit("CumSum", [ins[0], np.asarray(int(eqn.params["axis"]), np.int64)],
                  *_aval(eqn), reverse=int(bool(eqn.params["reverse"])))]


@_rule("reduce_window_max", "reduce_window_min", "reduce_window_sum")
def _reduce_window(cv, eqn, ins):
  p = eqn.params
  (x,) = ins
  shape, dtype = _aval(eqn)
  if dtype != np.float32:
    raise _unsupported(eqn, f"pooling of {dtype}")
  rank = len(cv.shape(x))
  window, strides = list(p["window_dimensions"]), list(p["window_strides"])
  padding, dilation = [tuple(map(int, q)) for q in p["padding"]], list(p["window_dilation"])
  if any(d != 1 for d in p["base_dilation"]) or any(v < 0 for q in padding for v in q):
    raise _unsupported(eqn, "base dilation or negative padding")
  pooled = [a for a in range(rank)
            if (window[a], strides[a], padding[a], dilation[a]) != (1, 1, (0, 0), 1)]
  if not pooled:
    return [x]
  rest = [a for a in range(rank) if a not in pooled]
  in_shape = cv.shape(x)
  lead = [in_shape[a] for a in rest]
  nc = ([1, 1] if not lead else [1, lead[0]] if len(lead) == 1
        else [int(np.prod(lead[:-1])), lead[-1]])
  y = cv.reshape(cv.transpose(x, rest + pooled), nc + [in_shape[a] for a in pooled])
  out_pooled = [shape[a] for a in pooled]
  attrs = dict(kernel_shape=[window[a] for a in pooled], strides=[strides[a] for a in pooled],
               pads=[padding[a][0] for a in pooled] + [padding[a][1] for a in pooled])
  if eqn.primitive.name == "reduce_window_sum":
    if any(dilation[a] != 1 for a in pooled):
      raise _unsupported(eqn, "dilated window sum")
    y = cv.emit("AveragePool", [y], nc + out_pooled, dtype, count_include_pad=1, **attrs)
    y = cv.binary("Mul", y, np.asarray(np.prod([window[a] for a in pooled]), dtype))
  else:
    attrs["dilations"] = [dilation[a] for a in pooled]
    if eqn.primitive.name == "reduce_window_min":
      y = cv.emit("Neg", [y], cv.shape(y), dtype)
    y = cv.emit("MaxPool", [y], nc + out_pooled, dtype, **attrs)
    if eqn.primitive.name == "reduce_window_min":
      y = cv.emit("Neg", [y], cv.shape(y), dtype)
  y = cv.reshape(y, lead + out_pooled)
  return [cv.transpose(y, np.argsort(rest + pooled))]


# -- linear algebra and convolutions ---------------------------------------------------------------

@_rule("dot_general")
def _dot_general(cv, eqn, ins):
  (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
  shape, dtype = _aval(eqn)
  lhs, rhs = (cv.cast(v, dtype) for v in ins)
  ls, rs = cv.shape(lhs), cv.shape(rhs)
  lc, rc, lb, rb = (tuple(int(d) for d in t) for t in (lc, rc, lb, rb))
  if not lb and lc == (len(ls) - 1,) and rc == (0,) and len(rs) == 2:
    return [cv.emit("MatMul", [lhs, rhs], shape, dtype)]
  lfree = [d for d in range(len(ls)) if d not in lc and d not in lb]
  rfree = [d for d in range(len(rs)) if d not in rc and d not in rb]
  batch = [ls[d] for d in lb]
  m, k = int(np.prod([ls[d] for d in lfree])), int(np.prod([ls[d] for d in lc]))
  n = int(np.prod([rs[d] for d in rfree]))
  x = cv.reshape(cv.transpose(lhs, list(lb) + lfree + list(lc)), batch + [m, k])
  y = cv.reshape(cv.transpose(rhs, list(rb) + list(rc) + rfree), batch + [k, n])
  return [cv.reshape(cv.emit("MatMul", [x, y], batch + [m, n], dtype), shape)]


@_rule("conv_general_dilated")
def _conv(cv, eqn, ins):
  p = eqn.params
  shape, dtype = _aval(eqn)
  if p["batch_group_count"] != 1 or dtype != np.float32:
    raise _unsupported(eqn, "batch_group_count > 1 or not float32")
  lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
  x = cv.transpose(cv.cast(ins[0], dtype), lhs_spec)         # N, C, spatial...
  w = cv.transpose(cv.cast(ins[1], dtype), rhs_spec)         # O, I / groups, spatial...
  n_sp = len(lhs_spec) - 2
  strides = [int(s) for s in p["window_strides"]]
  low, high = ([int(q[i]) for q in p["padding"]] for i in (0, 1))
  lhs_dil = [int(d) for d in (p["lhs_dilation"] or (1,) * n_sp)]
  rhs_dil = [int(d) for d in (p["rhs_dilation"] or (1,) * n_sp)]
  groups = int(p["feature_group_count"])
  kernel = cv.shape(w)[2:]
  out_nc = [shape[d] for d in out_spec]
  if any(d > 1 for d in lhs_dil):
    extent = [(k - 1) * r + 1 for k, r in zip(kernel, rhs_dil)]
    t_low = [e - 1 - lo for e, lo in zip(extent, low)]
    t_high = [e - 1 - hi for e, hi in zip(extent, high)]
    if isinstance(w, np.ndarray) and all(s == 1 for s in strides) and min(t_low + t_high) >= 0:
      # A transposed convolution: ConvTranspose with the kernel flipped and in / out swapped.
      def transposed_kernel():
        o, i = w.shape[:2]
        t = w.reshape(groups, o // groups, i, *kernel).swapaxes(1, 2)
        t = t.reshape(groups * i, o // groups, *kernel)
        return np.ascontiguousarray(np.flip(t, axis=tuple(range(2, 2 + n_sp))))
      w_t = cv.memo(("conv_transpose", id(w), groups), [w], transposed_kernel)
      y = cv.emit("ConvTranspose", [x, w_t], out_nc, dtype, strides=lhs_dil,
                  dilations=rhs_dil, group=groups, pads=t_low + t_high,
                  kernel_shape=list(kernel))
      return [cv.transpose(y, np.argsort(out_spec))]
    x = cv.interleave(x, [1, 1] + lhs_dil)
    high = [hi - (d - 1) for hi, d in zip(high, lhs_dil)]
  if min(low + high) < 0:
    x = cv.pad(x, [0, 0] + [min(v, 0) for v in low], [0, 0] + [min(v, 0) for v in high])
    low, high = [max(v, 0) for v in low], [max(v, 0) for v in high]
  y = cv.emit("Conv", [x, w], out_nc, dtype, strides=strides, dilations=rhs_dil, group=groups,
              pads=low + high, kernel_shape=list(kernel))
  return [cv.transpose(y, np.argsort(out_spec))]


# -- gather / scatter ------------------------------------------------------------------------------

def _mode_name(mode) -> str:
  return getattr(mode, "name", str(mode)).upper()


def _default_fill(dtype: np.dtype):
  if dtype == np.bool_:
    return True
  if np.issubdtype(dtype, np.floating):
    return np.nan
  return np.iinfo(dtype).min if np.issubdtype(dtype, np.signedinteger) else np.iinfo(dtype).max


@_rule("gather")
def _gather(cv, eqn, ins):
  p = eqn.params
  dn = p["dimension_numbers"]
  operand, indices = ins
  shape, dtype = _aval(eqn)
  oshape, ishape = cv.shape(operand), cv.shape(indices)
  sizes = [int(s) for s in p["slice_sizes"]]
  offset_dims = [int(d) for d in dn.offset_dims]
  collapsed = [int(d) for d in dn.collapsed_slice_dims]
  start_map = [int(d) for d in dn.start_index_map]
  op_batch = [int(d) for d in dn.operand_batching_dims]
  idx_batch = [int(d) for d in dn.start_indices_batching_dims]
  batch_shape = list(ishape[:-1])
  mode = _mode_name(p["mode"])
  if mode not in ("CLIP", "PROMISE_IN_BOUNDS", "FILL_OR_DROP"):
    raise _unsupported(eqn, f"mode {mode}")
  indices = cv.cast(indices, np.int64)
  upper = np.asarray([oshape[d] - sizes[d] for d in start_map], np.int64)
  clamped = cv.binary("Min", cv.binary("Max", indices, np.zeros((), np.int64)), upper)
  window_dims = [d for d in range(len(oshape)) if d not in collapsed and d not in op_batch]
  batch_positions = [j for j in range(len(shape)) if j not in offset_dims]
  simple = (not op_batch and len(start_map) == 1 and collapsed == start_map
            and all(sizes[d] == oshape[d] for d in range(len(oshape)) if d != start_map[0]))
  if simple:
    axis = start_map[0]
    flat = cv.reshape(clamped, batch_shape)
    got = list(oshape[:axis]) + batch_shape + list(oshape[axis + 1:])
    result = cv.emit("Gather", [operand, flat], got, dtype, axis=axis)
    # Gather's axes: operand's before `axis`, the index batch, operand's after `axis`.
    source = {d: (d if d < axis else d - 1 + len(batch_shape)) for d in window_dims}
    perm = [source[window_dims[offset_dims.index(j)]] if j in offset_dims
            else axis + batch_positions.index(j) for j in range(len(shape))]
  else:
    # The full index of every element of every window, then GatherND.
    rank = len(oshape)
    padded = cv.concat([clamped, np.zeros(batch_shape + [1], np.int64)], -1)
    pick = [start_map.index(d) if d in start_map else len(start_map) for d in range(rank)]
    start = cv.emit("Gather", [padded, _i64(pick)], batch_shape + [rank], np.int64, axis=-1)
    if op_batch:
      extra = np.zeros(batch_shape + [rank], np.int64)
      for d, bd in zip(op_batch, idx_batch):
        extra[..., d] = np.arange(batch_shape[bd]).reshape(
            [-1 if a == bd else 1 for a in range(len(batch_shape))])
      start = cv.binary("Add", start, extra)
    window = [sizes[d] for d in window_dims]
    grid = np.zeros(window + [rank], np.int64)
    for k, d in enumerate(window_dims):
      grid[..., d] = np.arange(window[k]).reshape([-1 if a == k else 1 for a in range(len(window))])
    start = cv.reshape(start, batch_shape + [1] * len(window) + [rank])
    full = cv.binary("Add", start, grid)
    result = cv.emit("GatherND", [operand, full], batch_shape + window, dtype)
    perm = [len(batch_shape) + offset_dims.index(j) if j in offset_dims
            else batch_positions.index(j) for j in range(len(shape))]
  result = cv.transpose(result, perm)
  if mode == "FILL_OR_DROP":
    ok = cv.cast(cv.binary("Equal", clamped, indices, np.bool_), np.int32)
    ok = cv.emit("ReduceMin", [ok, _i64([-1])], batch_shape, np.int32, keepdims=0)
    ok = cv.cast(ok, np.bool_)
    inner = [1] * len(shape)
    for b, j in enumerate(batch_positions):
      inner[j] = batch_shape[b]
    fill = p.get("fill_value")
    fill = np.asarray(_default_fill(dtype) if fill is None else fill, dtype)
    result = cv.where(cv.reshape(ok, inner), result, fill)
  return [result]


@_rule("dynamic_slice")
def _dynamic_slice(cv, eqn, ins):
  operand, starts = ins[0], ins[1:]
  sizes = [int(s) for s in eqn.params["slice_sizes"]]
  oshape = cv.shape(operand)
  upper = _i64([n - s for n, s in zip(oshape, sizes)])
  start = cv.concat([cv.reshape(cv.cast(s, np.int64), [1]) for s in starts], 0)
  start = cv.binary("Min", cv.binary("Max", start, np.zeros((), np.int64)), upper)
  end = cv.binary("Add", start, _i64(sizes))
  return [cv.emit("Slice", [operand, start, end], *_aval(eqn))]


_SCATTERS = {"scatter": "none", "scatter-add": "add", "scatter_add": "add", "scatter-mul": "mul",
             "scatter_mul": "mul", "scatter-min": "min", "scatter_min": "min",
             "scatter-max": "max", "scatter_max": "max"}


@_rule(*_SCATTERS)
def _scatter(cv, eqn, ins):
  p = eqn.params
  dn = p["dimension_numbers"]
  operand, indices, updates = ins
  shape, dtype = _aval(eqn)
  oshape, ushape = cv.shape(operand), cv.shape(updates)
  inserted = [int(d) for d in dn.inserted_window_dims]
  to_operand = [int(d) for d in dn.scatter_dims_to_operand_dims]
  window_dims = [int(d) for d in dn.update_window_dims]
  rest = [d for d in range(len(oshape)) if d not in to_operand]
  if (dn.operand_batching_dims or sorted(inserted) != sorted(to_operand)
      or [ushape[d] for d in window_dims] != [oshape[d] for d in rest]):
    raise _unsupported(eqn, "only scatters of whole slices at indexed positions map to ScatterND")
  mode = _mode_name(p["mode"])
  if mode not in ("CLIP", "PROMISE_IN_BOUNDS", "FILL_OR_DROP"):
    raise _unsupported(eqn, f"mode {mode}")
  k = len(to_operand)
  data = cv.transpose(operand, to_operand + rest)
  scatter_dims = [d for d in range(len(ushape)) if d not in window_dims]
  updates = cv.transpose(updates, scatter_dims + window_dims)
  indices = cv.cast(indices, np.int64)
  dims = np.asarray([oshape[d] for d in to_operand], np.int64)
  if mode == "CLIP":
    indices = cv.binary("Min", cv.binary("Max", indices, np.zeros((), np.int64)), dims - 1)
  elif mode == "FILL_OR_DROP":
    # Out-of-bounds updates go to one padding slot past the end of each indexed axis, which is
    # cut off afterwards.
    ok = cv.emit("And", [cv.binary("GreaterOrEqual", indices, np.zeros((), np.int64), np.bool_),
                         cv.binary("Less", indices, dims, np.bool_)],
                 cv.shape(indices), np.bool_)
    ok = cv.emit("ReduceMin", [cv.cast(ok, np.int32), _i64([-1])], cv.shape(indices)[:-1],
                 np.int32, keepdims=1)
    indices = cv.where(cv.cast(ok, np.bool_), indices, dims)
    data_shape = cv.shape(data)
    data = cv.pad(data, [0] * len(data_shape), [1] * k + [0] * (len(data_shape) - k))
  reduction = _SCATTERS[eqn.primitive.name]
  attrs = {} if reduction == "none" else {"reduction": reduction}
  out = cv.emit("ScatterND", [data, indices, updates], cv.shape(data), dtype, **attrs)
  if mode == "FILL_OR_DROP":
    out = cv.slice(out, [0] * k, [int(d) for d in dims], list(range(k)))
  return [cv.transpose(out, np.argsort(to_operand + rest))]


@_rule("dynamic_update_slice")
def _dynamic_update_slice(cv, eqn, ins):
  operand, update, starts = ins[0], ins[1], ins[2:]
  oshape, ushape = cv.shape(operand), cv.shape(update)
  upper = _i64([n - s for n, s in zip(oshape, ushape)])
  start = cv.concat([cv.reshape(cv.cast(s, np.int64), [1]) for s in starts], 0)
  start = cv.binary("Min", cv.binary("Max", start, np.zeros((), np.int64)), upper)
  rank = len(oshape)
  grid = np.stack(np.meshgrid(*[np.arange(n) for n in ushape], indexing="ij"), -1)
  full = cv.binary("Add", cv.reshape(start, [1] * rank + [rank]), grid.astype(np.int64))
  return [cv.emit("ScatterND", [operand, full, update], *_aval(eqn))]


# -- the converter's entry point -------------------------------------------------------------------

def jax_to_onnx(fn: Callable, example_args: Sequence, input_names: Sequence[str],
                output_names: Sequence[str], opset: int = DEFAULT_OPSET,
                graph_name: str = "rednet_jax"):
  """An onnx.ModelProto computing `fn(*example_args)` for arguments of the example arguments'
  shapes and dtypes. `fn` takes one array per input name and returns a pytree whose leaves
  (in `jax.tree.leaves` order) are the outputs; arrays it closes over become initializers."""
  onnx = _import_onnx()
  helper = onnx.helper
  closed = jax.make_jaxpr(fn)(*example_args)
  jaxpr = closed.jaxpr
  if len(input_names) != len(jaxpr.invars):
    raise ValueError(f"{len(input_names)} input names for {len(jaxpr.invars)} arguments")
  if len(output_names) != len(jaxpr.outvars):
    raise ValueError(f"{len(output_names)} output names for {len(jaxpr.outvars)} outputs")
  cv = _Converter(opset)
  inputs, outputs = [], []
  for name, var in zip(input_names, jaxpr.invars):
    shape, dtype = tuple(var.aval.shape), np.dtype(var.aval.dtype)
    if dtype.name not in _DTYPES:
      raise NotImplementedError(f"ONNX export: input {name!r} has dtype {dtype}")
    cv.shapes[name] = (shape, dtype)
    inputs.append(helper.make_tensor_value_info(name, cv.onnx_type(dtype), shape))
  values = cv.run(closed, [], list(input_names))
  for name, value in zip(output_names, values):
    shape, dtype = cv.shape(value), cv.dtype(value)
    cv.nodes.append(helper.make_node("Identity", [cv.ref(value)], [name], name=name))
    outputs.append(helper.make_tensor_value_info(name, cv.onnx_type(dtype), shape))
  nodes, initializers = _prune(cv.nodes, cv.initializers, output_names)
  graph = helper.make_graph(nodes, graph_name, inputs, outputs, initializers)
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                            producer_name="rednet_jax")
  model.ir_version = min(model.ir_version, 10)   # onnxruntime >= 1.20 reads IR 10
  onnx.checker.check_model(model)
  return model


def _prune(nodes: list, initializers: list, output_names: Sequence[str]):
  """Drops nodes and initializers no output depends on (the model's other outputs, e.g. the
  response maps, are traced but not exported)."""
  needed, kept = set(output_names), []
  for node in reversed(nodes):
    if any(o in needed for o in node.output):
      kept.append(node)
      needed.update(i for i in node.input if i)
  return kept[::-1], [t for t in initializers if t.name in needed]


# -- landmark models -------------------------------------------------------------------------------

def _inference_function(model: LandmarkModel, batch_size: int):
  """(fn, example arguments, input names, output names, carry leaves) of `model`'s
  inference at a fixed batch size, computed as LandmarkModel's own `apply`."""
  module = model.module
  carry = model.initial_carry(batch_size)
  leaves, treedef = jax.tree.flatten(carry)

  def fn(crops, init_points, *carry_leaves):
    out = module.apply(model.variables, module.normalise(crops)[:, None], init_points[:, None],
                       jax.tree.unflatten(treedef, carry_leaves), train=False)
    carry_out = jax.tree.leaves(out["carry"])
    if len(carry_out) != len(leaves):
      raise ValueError(f"the model returns {len(carry_out)} carry leaves for {len(leaves)}")
    return [out["points"][-1, :, 0], module.confidence(out)[:, 0], *carry_out]

  crops = np.zeros((batch_size, model.size, model.size, 3), np.uint8)
  points = np.ascontiguousarray(np.broadcast_to(model.mean_shape,
                                                (batch_size, *model.mean_shape.shape)))
  leaves = [np.asarray(leaf) for leaf in leaves]
  inputs = ["crops", "init_points"] + [f"carry_{i}" for i in range(len(leaves))]
  outputs = ["points", "confidence"] + [f"carry_out_{i}" for i in range(len(leaves))]
  return fn, [crops, points, *leaves], inputs, outputs, leaves


def export_landmark_model(model: LandmarkModel, path: str, batch_size: int = 1,
                          opset: int = DEFAULT_OPSET, info: dict | None = None) -> str:
  """Writes `model`'s inference for batches of `batch_size` crops as `path`/model.onnx and its
  description as `path`/model.json (with an "onnx" entry; `info` is merged into its "info").
  Inputs: crops uint8 (B, size, size, 3), init_points float32 (B, L, 2) in crop pixels, and
  carry_0, carry_1, ... (the leaves of `initial_carry(B)`, none for a stateless model).
  Outputs: points (B, L, 2) (the last spatial step), confidence (B,), carry_out_0, ...
  Returns `path`."""
  onnx = _import_onnx()
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  fn, args, inputs, outputs, leaves = _inference_function(model, batch_size)
  proto = jax_to_onnx(fn, args, inputs, outputs, opset)
  os.makedirs(path, exist_ok=True)
  onnx.save(proto, os.path.join(path, ONNX_FILE))
  description = copy.deepcopy(model.description)
  if info:
    description["info"] = {**description.get("info", {}), **info}
  description["onnx"] = {"file": ONNX_FILE, "batch_size": int(batch_size), "opset": int(opset),
                         "carry_leaves": [list(leaf.shape) for leaf in leaves]}
  with open(os.path.join(path, MODEL_FILE), "w", encoding="utf-8") as f:
    json.dump(description, f, indent=1)
  return path


class OnnxLandmarkModel(LandmarkModel):
  """An `export_landmark_model` folder run by onnxruntime (CPU), with LandmarkModel's interface
  (`Tracker`, `predict`, `predict_folder`). The graph has a fixed batch size (`batch_size`):
  `run_crops` takes exactly that many crops; `predict` pads its batches to it. Only the last
  spatial step is exported: `run_crops` returns steps (1, B, L, 2) and no step maps. The
  read-out is part of the graph (no `readout` override). `num_threads`: onnxruntime's
  intra-op threads (None: its default)."""

  def __init__(self, path: str, num_threads: int | None = None):
    ort = _import_onnxruntime()
    path = os.path.abspath(os.path.expanduser(path))
    model_file = os.path.join(path, MODEL_FILE)
    if not os.path.isfile(model_file):
      raise FileNotFoundError(f"{path}: not an exported model (no {MODEL_FILE})")
    with open(model_file, encoding="utf-8") as f:
      description = json.load(f)
    if "onnx" not in description:
      raise ValueError(f"{model_file} has no 'onnx' entry: not an ONNX export (export one with "
                       "experiments/export.py --format=onnx)")
    super().__init__(description, None, path)
    spec = description["onnx"]
    self.batch_size = int(spec["batch_size"])
    self.onnx_file = os.path.join(path, spec["file"])
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if num_threads:
      options.intra_op_num_threads = int(num_threads)
    self.session = ort.InferenceSession(self.onnx_file, options,
                                        providers=["CPUExecutionProvider"])
    template = self.initial_carry(self.batch_size)
    leaves, self._carry_treedef = jax.tree.flatten(template)
    recorded = [tuple(s) for s in spec.get("carry_leaves", [])]
    if [leaf.shape for leaf in leaves] != recorded:
      raise ValueError(f"{model_file}: carry leaves {recorded} do not match the model's "
                       f"{[leaf.shape for leaf in leaves]}")
    self._carry_dtypes = [leaf.dtype for leaf in leaves]

  def initial_carry(self, batch_size: int = 1):
    shapes = jax.eval_shape(lambda: self.module.initial_carry(batch_size))
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)

  def run_crops(self, crops: np.ndarray, init_points: np.ndarray | None = None, carry=None,
                maps: bool = False) -> dict[str, Any]:
    """As LandmarkModel.run_crops for exactly `batch_size` crops; steps is (1, B, L, 2) (the
    last step only) and there are no step maps."""
    if maps:
      raise ValueError(f"{self.onnx_file}: step maps are not exported")
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1:] != (self.size, self.size, 3):
      raise ValueError(f"crops must be (B, {self.size}, {self.size}, 3), got {crops.shape}")
    if len(crops) != self.batch_size:
      raise ValueError(f"{self.onnx_file} was exported for batches of {self.batch_size} "
                       f"crop(s), got {len(crops)}")
    if crops.dtype != np.uint8:
      raise ValueError(f"crops must be uint8, got {crops.dtype}")
    if init_points is None:
      init_points = np.broadcast_to(self.mean_shape, (len(crops), *self.mean_shape.shape))
    if carry is None:
      carry = self.initial_carry(len(crops))
    feeds = {"crops": crops, "init_points": np.ascontiguousarray(init_points, np.float32)}
    for i, (leaf, dtype) in enumerate(zip(jax.tree.leaves(carry), self._carry_dtypes)):
      feeds[f"carry_{i}"] = np.asarray(leaf, dtype, order="C")
    points, confidence, *carry_out = self.session.run(None, feeds)
    return {"steps": points[None], "confidence": confidence,
            "carry": jax.tree.unflatten(self._carry_treedef, carry_out)}

  def predict(self, images: list[np.ndarray], boxes: list[tuple[np.ndarray, float]],
              batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """LandmarkModel.predict in batches of the exported size (`batch_size` is ignored)."""
    return super().predict(images, boxes, self.batch_size)


def load_onnx_model(path: str, num_threads: int | None = None) -> OnnxLandmarkModel:
  """An `export_landmark_model` folder as an OnnxLandmarkModel."""
  return OnnxLandmarkModel(path, num_threads)


def check_against_jax(model: LandmarkModel, onnx_dir: str, crops: np.ndarray,
                      num_threads: int | None = None) -> dict[str, float]:
  """Runs `crops` (N, size, size, 3) uint8 through `model` and the ONNX export in `onnx_dir`,
  in batches of the exported size (the last padded with black crops), twice: from the mean
  shape and the initial carry, then from each one's own points and carry (a tracked second
  frame). Returns the largest absolute differences: points (crop px), confidence, carry."""
  exported = load_onnx_model(onnx_dir, num_threads)
  crops = np.asarray(crops, np.uint8)
  b = exported.batch_size
  diffs = {"points": 0.0, "confidence": 0.0, "carry": 0.0}
  for start in range(0, len(crops), b):
    chunk = crops[start:start + b]
    n = len(chunk)
    chunk = np.concatenate([chunk, np.zeros((b - n, *chunk.shape[1:]), np.uint8)])
    ours, theirs = (None, None), (None, None)
    for _ in range(2):
      a = model.run_crops(chunk, *ours)
      o = exported.run_crops(chunk, *theirs)
      diffs["points"] = max(diffs["points"], float(np.abs(a["steps"][-1, :n]
                                                          - o["steps"][-1, :n]).max()))
      diffs["confidence"] = max(diffs["confidence"],
                                float(np.abs(a["confidence"][:n] - o["confidence"][:n]).max()))
      for x, y in zip(jax.tree.leaves(a["carry"]), jax.tree.leaves(o["carry"])):
        diffs["carry"] = max(diffs["carry"], float(np.abs(np.asarray(x, np.float64)
                                                          - np.asarray(y, np.float64)).max()))
      ours, theirs = (a["steps"][-1], a["carry"]), (o["steps"][-1], o["carry"])
  return diffs
