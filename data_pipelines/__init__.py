"""Data for rednet-jax: dataset readers (iBUG .pts, 300-W-style folders, 300-VW), landmark
schemes, face crops with the paper's augmentation, and Grain image / clip-batch pipelines."""
