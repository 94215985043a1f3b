"""Evaluation: metrics, held-out evaluation during training, the benchmark protocols and reports."""
