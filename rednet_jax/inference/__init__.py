"""Inference: exported models, the streaming tracker, the face detector, the stabiliser and video I/O."""
