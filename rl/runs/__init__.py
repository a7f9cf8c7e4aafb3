"""Run storage: one training run's directory on disk (config, status, metrics, checkpoints,
TensorBoard), written atomically and locked, environment state as arrays for safe
checkpoints, and a trained run opened as a policy (``policy.load_policy``). The bottom
layer of rl/: it imports nothing from the rest of the package."""
