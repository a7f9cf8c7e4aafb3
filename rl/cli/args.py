"""Build argparse options from typed config dataclasses.

A config field is documented by the string literal right after it (an attribute
docstring); that text becomes the option's ``--help``. Field ``num_envs`` becomes
``--num-envs``; ``bool`` fields become ``--flag/--no-flag``; ``X | None`` fields accept
``none``. Step counts accept suffixes: ``10M``, ``500k``. Numbers must be finite: ``inf``
and ``nan`` are refused at parse time for every option built here.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import math
import textwrap
import types
import typing

from rl.train.config import parse_count


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (and its dataclass bases), by field name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for node, nxt in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _base_type(tp):
    """(base type, optional) for ``X`` or ``X | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _converter(tp, optional: bool, name: str):
    base = int if tp is int else tp
    if tp is int and ("steps" in name or "frames" in name):
        base = parse_count

    def convert(text: str):
        if optional and text.lower() in ("none", "null", ""):
            return None
        if typing.get_origin(tp) is typing.Literal:
            choices = typing.get_args(tp)
            if text not in choices:
                raise argparse.ArgumentTypeError(f"choose one of {', '.join(choices)}")
            return text
        try:
            value = base(text)
        except ValueError:
            what = {int: "an integer", float: "a number"}.get(tp, getattr(tp, "__name__", tp))
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        return value

    convert.__name__ = getattr(tp, "__name__", "value")
    return convert


def at_least(minimum: int, parse=int):
    """argparse type: an integer >= ``minimum`` read by ``parse`` (``parse_count``: 60k)."""

    def convert(text: str) -> int:
        value = parse(text)  # ValueError: argparse says "invalid int value"
        if value < minimum:
            what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    convert.__name__ = parse.__name__
    return convert


def _number_list(text: str, parse, ok, what: str) -> list:
    """Comma-separated values read by ``parse``; ArgumentTypeError unless all are ``ok``."""
    try:
        values = [parse(p) for p in text.split(",") if p.strip()]
    except ValueError:
        values = []
    if not values or not all(ok(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}")
    return values


def finite_floats(text: str) -> list[float]:
    """argparse type: comma-separated finite numbers (e.g. target returns 100,200)."""
    return _number_list(text, float, math.isfinite, "finite numbers (e.g. 100,200)")


def seed_list(text: str) -> list[int]:
    """argparse type: comma-separated seeds, integers >= 0 (e.g. 0,1,2)."""
    return _number_list(text, int, lambda v: v >= 0, "integers >= 0 (e.g. 0,1,2)")


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    value = float(text)  # ValueError: argparse says "invalid float value"
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = float(text)  # ValueError: argparse says "invalid float value"
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def add_env_module_arg(parser: argparse.ArgumentParser) -> None:
    """``--env-module MODULE`` (repeatable): user code that registers environments, imported
    before any environment is made (``rl.cli.app.main`` imports them)."""
    parser.add_argument(
        "--env-module", dest="env_modules", action="append", metavar="MODULE", default=[],
        help="import this module first: unpackaged code that registers environments with "
        "envs.register_env or gymnasium.register (from the Python path or the working "
        "directory; repeatable). Or name the environment as MODULE:ENV_ID")


def add_dataclass_args(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    title: str | None = None,
    exclude: tuple[str, ...] = (),
    defaults: dict | None = None,
) -> None:
    """Add one option per field of ``cls``; defaults come from the class or ``defaults``.

    Defaults are shown in help but stored as ``argparse.SUPPRESS``-free sentinels so that
    :func:`explicit_fields` can tell what the user actually typed.
    """
    group = parser.add_argument_group(title or cls.__name__)
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    defaults = defaults or {}
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        tp, optional = _base_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        default = defaults.get(f.name, f.default)
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        help_text = docs.get(f.name, "").replace("%", "%%")  # argparse formats help with %
        shown = "required" if default is dataclasses.MISSING else f"default: {default}"
        kwargs = dict(dest=f.name, default=None, help=f"{help_text} ({shown})")
        if tp is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            metavar = f.name.upper() if typing.get_origin(tp) is not typing.Literal else None
            if metavar is None:
                kwargs["help"] = f"{help_text} {{{', '.join(typing.get_args(tp))}}} ({shown})"
            group.add_argument(
                flag, type=_converter(tp, optional, f.name), metavar=metavar or "CHOICE", **kwargs
            )


def explicit_fields(ns: argparse.Namespace, cls: type) -> dict:
    """The fields of ``cls`` the user set on the command line (others are None)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(ns).items() if k in names and v is not None}


def dataclass_from_args(ns: argparse.Namespace, cls: type, base=None, **extra):
    """Build ``cls`` from ``base`` (or its defaults) updated by the options the user set."""
    values = {f.name: getattr(base, f.name) for f in dataclasses.fields(cls)} if base else {}
    values.update(explicit_fields(ns, cls))
    values.update(extra)
    return cls(**values)
