"""Tests of rl.cli."""
