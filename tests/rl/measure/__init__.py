"""Tests of rl.measure."""
