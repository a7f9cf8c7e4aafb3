"""Run storage: one training run's directory on disk (config, status, metrics, checkpoints,
TensorBoard), written atomically and locked, and environment state as arrays for safe
checkpoints. The bottom layer of rl/: it imports nothing from the rest of the package."""
