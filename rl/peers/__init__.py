"""Peer implementations trained on the same settings for comparison: stable-baselines3 PPO
with the same smoothed return, stopping rule and noise-scale measurement."""
