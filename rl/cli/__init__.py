"""The ``rlscale`` command line: one subcommand per job, built from the config dataclasses.

``main`` is the entry point (``rlscale``, ``python -m rl.cli``); each ``rl.cli.<command>``
module adds its subcommands. The CLI is the top of the package: it imports every layer
below and nothing imports it.
"""

from rl.cli.app import main

__all__ = ["main"]
