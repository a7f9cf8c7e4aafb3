"""The options of every ``rlscale`` subcommand, built without importing what the commands run.

Each module here adds one command's subparser from the config dataclasses alone and points
it at its implementation (``rl.cli.<command>``) by name, through :func:`command`: building
the parser, which every ``--help`` does for all commands, then loads none of the training,
analysis or plotting code (docs/architecture.md, "Lazy imports").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


class Command:
    """``args.func`` of a subcommand: the function ``name`` of ``module``, imported on the
    first call, so that parsing (and ``--help``) never imports the implementation."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def resolve(self) -> Callable:
        # import_module, not an import statement: the one place the CLI defers its layers.
        return getattr(importlib.import_module(self.module), self.name)

    def __call__(self, args):
        return self.resolve()(args)

    def __repr__(self) -> str:
        return f"Command({self.module}.{self.name})"


def command(module: str, name: str) -> Command:
    """The subcommand function ``module.name``, imported when the command runs."""
    return Command(module, name)


__all__ = ["Command", "command"]
