"""Tests of rl.sweeps."""
