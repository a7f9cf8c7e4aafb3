"""The ``rlscale`` command line: one subcommand per job, built from the config dataclasses.

``main`` is the entry point (``rlscale``, ``python -m rl.cli``); each ``rl.cli.parsers``
module adds a command's options and ``rl.cli.<command>`` runs it, imported only then
(docs/architecture.md). The CLI is the top of the package: nothing imports it.
"""

from rl.cli.app import main

__all__ = ["main"]
