"""Fits and analysis of finished runs: the critical batch size, power laws, sharpness,
learning parity, adaptive against fixed batches, evaluation games of a trained policy. See
docs/critical-batch.md."""
