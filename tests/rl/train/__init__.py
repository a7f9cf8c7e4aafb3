"""Tests of rl.train."""
