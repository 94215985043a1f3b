"""How the command-line tools in `experiments/` end on a user's mistake: one message on stderr
and exit status 1, no traceback (`--verbose` shows it).

User errors are bad config values or overrides (`ConfigError`, its subclass
`ConfigMismatchError`), bad or missing data (`DataError`), a stage folder held by another run
(`StageInUseError`), a non-finite loss (`NonFiniteLossError`), a full disk or a folder that
cannot be written. They are found anywhere in an exception's chain, so a cause wrapped by
another library (Orbax, Grain workers) is still reported as itself. Anything else is a bug in
this project and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Callable

from absl import app, flags

_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the traceback of user errors too.")

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EACCES, errno.EROFS, errno.EPERM)


def _user_error_types() -> tuple[type, ...]:
  from data_pipelines.pts import DataError  # pylint: disable=g-import-not-at-top
  from rednet_jax.training.configs import ConfigError  # pylint: disable=g-import-not-at-top
  from rednet_jax.training.run_records import StageInUseError  # pylint: disable=g-import-not-at-top
  from rednet_jax.training.trainer import NonFiniteLossError  # pylint: disable=g-import-not-at-top
  return (ConfigError, DataError, StageInUseError, NonFiniteLossError)


def _chain(error: BaseException):
  seen = set()
  stack = [error]
  while stack:
    e = stack.pop(0)
    if e is None or id(e) in seen:
      continue
    seen.add(id(e))
    yield e
    stack += [e.__cause__, e.__context__]


def user_error_message(error: BaseException) -> str | None:
  """The message to show for a user error anywhere in `error`'s chain; None for a bug."""
  types = _user_error_types()
  for e in _chain(error):
    if isinstance(e, types):
      return str(e)
  for e in _chain(error):
    if isinstance(e, OSError) and e.errno in _DISK_FULL:
      where = f" while writing {e.filename}" if e.filename else ""
      return (f"no space left on the device{where} ({e.strerror or 'errno ' + str(e.errno)}). "
              "Checkpoints already written are kept; free some space (or move --workdir) and "
              "run the same command again to resume.")
    if isinstance(e, OSError) and e.errno in _NOT_WRITABLE:
      return f"cannot write {e.filename or 'a file'}: {e.strerror}; check the folder's permissions"
  return None


def run(main: Callable[[list[str]], None], prepare_argv: Callable[[list[str]], list[str]]
        | None = None) -> None:
  """`absl.app.run(main)`, ending user errors with one line on stderr and exit status 1.
  `prepare_argv` rewrites sys.argv first (config name resolution), under the same rule."""
  verbose = any(a in ("--verbose", "--verbose=true", "--verbose=True") for a in sys.argv)

  def fail(error: BaseException) -> None:
    message = user_error_message(error)
    if message is None or verbose or (flags.FLAGS.is_parsed() and _VERBOSE.value):
      raise error
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)

  def wrapped(argv):
    try:
      return main(argv)
    except Exception as e:  # pylint: disable=broad-except
      fail(e)

  if prepare_argv is not None:
    try:
      sys.argv = prepare_argv(sys.argv)
    except Exception as e:  # pylint: disable=broad-except
      fail(e)
  app.run(wrapped)


def define_model_flags() -> Callable[[], object]:
  """--checkpoint (an exported model) or --workdir/--stage (a stage of a training run, read
  with its recorded config); neither: the shipped model. Returns the loader to call in main."""
  checkpoint = flags.DEFINE_string("checkpoint", None, "Exported model folder (default: the "
                                   "shipped model); a folder with model.onnx (export.py "
                                   "--format=onnx) runs on onnxruntime.")
  workdir = flags.DEFINE_string("workdir", None, "Instead of --checkpoint: a training run's "
                                "workdir, used with its recorded config.")
  stage = flags.DEFINE_string("stage", None, "With --workdir: the stage (may be left out when "
                              "the workdir holds one).")
  readout = flags.DEFINE_string("readout", None,
                                "Landmark read-out from the responses instead of the model's own "
                                "(RED-Net v1: cluster_centroid, the paper's, or "
                                "probability_centroid, sub-pixel; see the system's `readout`).")
  readout_window = flags.DEFINE_integer("readout_window", None, "Window side (odd, px) of the "
                                        "sub-pixel read-out instead of the model's.")

  def load():
    from rednet_jax.training import configs
    from rednet_jax.inference import landmark_model  # pylint: disable=g-import-not-at-top
    if workdir.value and checkpoint.value:
      raise configs.ConfigError("give --checkpoint (an exported model) or --workdir/--stage (a "
                                "training run), not both")
    if stage.value and not workdir.value:
      raise configs.ConfigError("--stage needs --workdir")
    fields = {"readout": readout.value, "readout_window": readout_window.value}
    if workdir.value:
      return landmark_model.load_run_stage(workdir.value, stage.value, fields)
    if checkpoint.value and os.path.isfile(os.path.join(os.path.expanduser(checkpoint.value),
                                                        "model.onnx")):
      from rednet_jax.inference import onnx_export  # pylint: disable=g-import-not-at-top
      if any(v is not None for v in fields.values()):
        raise configs.ConfigError(f"{checkpoint.value} is an ONNX export: its read-out is part "
                                  "of the graph; --readout / --readout_window need the Orbax "
                                  "model it was exported from")
      return onnx_export.load_onnx_model(checkpoint.value)
    return landmark_model.load_model(checkpoint.value, fields)

  return load
