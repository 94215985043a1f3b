"""Training: the trainer, its jitted step, checkpoints, input pipeline, configs, run records and sweeps."""
