"""Model registry: `config.model.name` selects a system (one file of this package, a
`system.System`); the other fields of `config.model` are that module's dataclass fields."""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp

from rednet_jax.models.drr import DeepRecurrentRegression
from rednet_jax.models.local_motion import LocalMotion
from rednet_jax.models.rednet_v1 import RedNetV1
from rednet_jax.models.rednet_v2 import RedNetV2
from rednet_jax.models.system import System

MODELS: dict[str, type[System]] = {
    "rednet_v1": RedNetV1,
    "rednet_v2": RedNetV2,
    "local_motion": LocalMotion,
    "drr": DeepRecurrentRegression,
}


def build_model(model_config: Mapping[str, Any]) -> System:
  """Instantiates `MODELS[model_config["name"]]` with the remaining fields; unknown names and
  fields are errors (a typo in a sweep must not silently fall back to a default)."""
  fields = dict(model_config)
  name = fields.pop("name", None)
  if name not in MODELS:
    raise ValueError(f"unknown model name {name!r}; known: {sorted(MODELS)}")
  cls = MODELS[name]
  known = set(cls.__dataclass_fields__) - {"parent", "name"}
  unknown = set(fields) - known
  if unknown:
    raise ValueError(f"model {name!r} has no field(s) {sorted(unknown)}; fields: {sorted(known)}")
  # Config systems hand lists where the module wants hashable tuples, and dtype names.
  fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
  if isinstance(fields.get("dtype"), str):
    fields["dtype"] = jnp.dtype(fields["dtype"])
  return cls(**fields)
