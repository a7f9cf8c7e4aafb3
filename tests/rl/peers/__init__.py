"""Tests of rl.peers."""
