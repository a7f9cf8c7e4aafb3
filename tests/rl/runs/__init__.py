"""Tests of rl.runs."""
