"""docs/cli.md, the command-line reference, generated from the ``rlscale`` parser itself.

``cli_reference()`` walks ``build_parser()``: one section per (sub)command with its
description, arguments and options, grouped as ``--help`` groups them. Regenerate the page
with ``python scripts/cli_reference.py`` (``--check`` says whether it is current; a test
runs the check).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from rl.cli.app import build_parser

__all__ = ["cli_reference", "commands"]

HEADER = """# Command-line reference

Every `rlscale` command and its options, generated from the parser by
`python scripts/cli_reference.py` (do not edit by hand: a test checks that this page matches
the parser). `rlscale COMMAND --help` prints the same. Counts accept suffixes (`10M`, `500k`);
options of type `X | none` accept `none`; boolean options come in pairs (`--flag`,
`--no-flag`).
"""


def commands(parser: argparse.ArgumentParser | None = None
             ) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(command path, one-line help, parser) of every command and subcommand, depth first,
    in the order ``--help`` lists them."""
    parser = build_parser() if parser is None else parser
    yield parser.prog, parser.description or "", parser
    yield from _subcommands(parser)


def _subcommands(parser: argparse.ArgumentParser):
    for action in parser._actions:  # argparse has no public walk of its subparsers
        if not isinstance(action.choices, dict):
            continue
        helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
        for name, sub in action.choices.items():
            yield sub.prog, helps.get(name, ""), sub
            yield from _subcommands(sub)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _help(action: argparse.Action, prog: str) -> str:
    """The option's help as ``--help`` prints it (``%(default)s`` expanded, ``%%`` -> ``%``)."""
    text = action.help or ""
    values = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    values["prog"] = prog
    if values.get("choices") is not None:
        values["choices"] = ", ".join(map(str, values["choices"]))
    try:
        return text % values
    except (KeyError, TypeError, ValueError):
        return text


def _invocation(action: argparse.Action) -> str:
    if not action.option_strings:
        return action.metavar or action.dest
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    if action.metavar is not None:
        metavar = action.metavar
    elif action.choices is not None:
        metavar = "{" + ",".join(map(str, action.choices)) + "}"
    else:
        metavar = action.dest.upper()
    suffix = {"?": f" [{metavar}]", "*": f" [{metavar} ...]", "+": f" {metavar} [...]"}
    tail = suffix.get(action.nargs, f" {metavar}")
    return ", ".join(option + tail for option in action.option_strings)


def _section(path: str, summary: str, parser: argparse.ArgumentParser) -> list[str]:
    level = "#" * min(2 + path.count(" ") - 1, 4) if " " in path else "##"
    lines = [f"{level} `{path}`", ""]
    description = parser.description or summary
    if description:
        lines += [" ".join(description.split()), ""]
    for group in parser._action_groups:  # the groups --help prints, in its order
        rows = []
        for action in group._group_actions:
            if action.help == argparse.SUPPRESS or action.dest == "help":
                continue
            if isinstance(action.choices, dict):  # subcommands: listed as their own sections
                names = ", ".join(f"`{name}`" for name in action.choices)
                rows.append(f"| `{action.metavar or action.dest}` | one of {names} |")
                continue
            rows.append(f"| `{_cell(_invocation(action))}` | {_cell(_help(action, path))} |")
        if rows:
            lines += [f"**{group.title}**", "", "| argument | meaning |", "| --- | --- |",
                      *rows, ""]
    return lines


def cli_reference(parser: argparse.ArgumentParser | None = None) -> str:
    """docs/cli.md's text: the header, a list of the commands, then a section per command."""
    entries = list(commands(parser))
    index = [f"- [`{path}`](#{_anchor(path)}): {_cell(summary)}" if summary
             else f"- [`{path}`](#{_anchor(path)})" for path, summary, _ in entries[1:]]
    lines = [HEADER, "## Commands", "", *index, ""]
    for path, summary, sub in entries:
        lines += _section(path, summary, sub)
    return "\n".join(lines).rstrip("\n") + "\n"


def _anchor(path: str) -> str:
    """GitHub's anchor of a heading `` `path` ``: lower case, spaces to hyphens."""
    return "".join(c for c in path.lower().replace(" ", "-") if c.isalnum() or c in "-_")
