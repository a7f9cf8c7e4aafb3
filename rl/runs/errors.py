"""The base error of rl.runs: a run directory that cannot be used as asked."""

from __future__ import annotations

__all__ = ["RunDirError"]


class RunDirError(ValueError):
    """A run directory cannot be used the way it was asked to be."""
