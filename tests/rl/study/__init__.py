"""Tests of rl.study."""
