"""Tests of rl.analysis."""
