"""rednet-jax: RED-Net and related video face-alignment systems in JAX/Flax."""

__version__ = "0.1.0"
