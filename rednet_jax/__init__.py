"""rednet-jax: RED-Net and related video face-alignment systems in JAX/Flax."""

import logging as _logging

from absl import logging as _absl_logging

__version__ = "0.1.0"


class _HideOrbaxInfo(_logging.Filter):
  """Orbax logs a dozen INFO lines per save and restore through absl; keep its warnings and
  errors (everything that imports this package: training, export, evaluation, notebooks)."""

  def filter(self, record: _logging.LogRecord) -> bool:
    return record.levelno >= _logging.WARNING or "orbax" not in record.pathname


_absl_logging.get_absl_logger().addFilter(_HideOrbaxInfo())
