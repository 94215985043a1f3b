"""Data for rednet-jax: landmark schemes now; dataset readers and Grain loaders arrive with the
data-pipeline issue (see README)."""
