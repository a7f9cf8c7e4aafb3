"""Measurements: the gradient noise scale (two-batch estimator, trackers, the PPO grouped
estimator and the free data-parallel one), the supervised reference, and the smoothed
return with its target rule. See docs/noise-scale.md."""
