"""A vector env's exact state as tensors and plain values, for checkpoints that load safely.

See docs/run-directory.md for the full description.
"""

from __future__ import annotations

import collections
import enum
import functools
import random
import types
from typing import Any

import numpy as np
import torch

__all__ = ["EnvStateError", "env_state", "restore_env_state", "saved_env_state"]

_FORMAT = 1
_SCALARS = (bool, int, float, str, type(None))
_CONSTANTS = (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
              types.ModuleType, functools.partial, enum.Enum, np.dtype, property)
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


class EnvStateError(ValueError):
    """The env's state cannot be saved, or a saved state does not fit this env."""


def env_state(env: Any) -> dict[str, Any]:
    """The state of ``env`` as a tree of tensors and plain values (see the module doc)."""
    return {"format": _FORMAT, "root": _encode(env, {}, "env")}


def saved_env_state(env: Any) -> dict[str, Any] | None:
    """``env_state(env)`` where the env is ``checkpointable`` and its state can be saved,
    else None (the env is then rebuilt from a derived seed on resume)."""
    if not getattr(env, "checkpointable", False):
        return None
    try:
        return env_state(env)
    except EnvStateError:
        return None


def restore_env_state(env: Any, state: Any) -> Any:
    """Write ``state`` (from ``env_state``) into ``env``, built like the saved one; returns it.

    Raises ``EnvStateError`` if the state does not fit the env (the env may then be partly
    overwritten: rebuild it).
    """
    if not isinstance(state, dict) or state.get("format") != _FORMAT or "root" not in state:
        raise EnvStateError("not an environment state written by rl.runs.envstate")
    return _decode(state["root"], env, "env", {})


def _class_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _array(value: np.ndarray | np.generic, where: str) -> dict[str, Any]:
    arr = np.asarray(value)
    if arr.dtype.hasobject:
        raise EnvStateError(f"{where}: an object array cannot be saved")
    raw = np.ascontiguousarray(arr).tobytes()
    return {"kind": "ndarray" if isinstance(value, np.ndarray) else "npscalar",
            "dtype": arr.dtype.str, "shape": list(arr.shape),
            "data": torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw
            else torch.zeros(0, dtype=torch.uint8)}


def _encode(obj: Any, seen: dict[int, tuple[str, Any]], where: str) -> Any:
    """``seen``: id -> (path of its first occurrence, the object, kept alive so that the
    id of a temporary, e.g. a generator's state dict, is not reused meanwhile)."""
    if type(obj) in _SCALARS or isinstance(obj, np.generic):
        return obj if type(obj) in _SCALARS else _array(obj, where)
    if isinstance(obj, _CONSTANTS) or callable(obj) and not hasattr(obj, "__dict__"):
        return {"kind": "skip"}
    if id(obj) in seen:  # shared or cyclic: restored as the same object
        return {"kind": "ref", "path": seen[id(obj)][0]}
    seen[id(obj)] = (where, obj)
    if isinstance(obj, np.ndarray):
        return _array(obj, where)
    if isinstance(obj, np.random.Generator):
        return {"kind": "generator",
                "state": _encode(obj.bit_generator.state, seen, f"{where}.<state>")}
    if isinstance(obj, np.random.RandomState):
        return {"kind": "randomstate",
                "state": _encode(obj.get_state(legacy=False), seen, f"{where}.<state>")}
    if isinstance(obj, random.Random):
        return {"kind": "random", "state": _encode(obj.getstate(), seen, f"{where}.<state>")}
    if type(obj) in (list, tuple, collections.deque):
        return {"kind": type(obj).__name__, "maxlen": getattr(obj, "maxlen", None),
                "items": [_encode(x, seen, f"{where}[{i}]") for i, x in enumerate(obj)]}
    if type(obj) in (dict, collections.OrderedDict):
        keys = list(obj)
        if any(type(k) not in _SCALARS for k in keys):
            raise EnvStateError(f"{where}: a dict with keys other than plain values")
        return {"kind": "dict", "keys": keys,
                "values": [_encode(obj[k], seen, f"{where}[{k!r}]") for k in keys]}
    attrs = getattr(obj, "__dict__", None)
    if isinstance(attrs, dict):
        return {"kind": "object", "class": _class_name(obj),
                "attrs": {k: _encode(v, seen, f"{where}.{k}") for k, v in attrs.items()}}
    raise EnvStateError(f"{where}: a {_class_name(obj)} cannot be saved")


def _check_field(obj: Any, name: Any, node: Any, where: str) -> None:
    """EnvStateError unless ``name`` is a state field of ``obj`` that ``env_state`` could
    have saved: plain data, never a method, property or special attribute.

    A checkpoint is read without running code, but writing its fields into the rebuilt env
    must not run code later either: a field ``close`` would shadow ``obj.close`` with the
    file's value. The rebuilt env lacks some data fields still (set on first use, e.g.
    gymnasium's ``_np_random``), so a field is known if the instance holds it or its class
    holds no function, descriptor or class under that name.
    """
    if not isinstance(name, str) or name.startswith("__"):
        raise EnvStateError(f"{where}: not a state field of a {_class_name(obj)}; refusing to "
                            "restore it (the checkpoint was not written by rl.runs.envstate)")
    attrs = obj.__dict__
    current = attrs[name] if name in attrs else getattr(type(obj), name, None)
    saved_as_constant = isinstance(node, dict) and node.get("kind") == "skip"
    if isinstance(current, _CONSTANTS) and not saved_as_constant or (
            name not in attrs and (callable(current) or hasattr(current, "__get__"))):
        raise EnvStateError(
            f"{where}: the saved state sets {name!r}, which a {_class_name(obj)} holds as a "
            f"{type(current).__name__}, not state; refusing to overwrite it (the checkpoint "
            "was not written by rl.runs.envstate for this env: move it out of checkpoints/)")


def _decode(node: Any, template: Any, where: str, done: dict[str, Any]) -> Any:
    """``done``: path -> the object restored there (what a later "ref" node stands for)."""
    if type(node) in _SCALARS:
        return node
    if not isinstance(node, dict) or not isinstance(node.get("kind"), str):
        raise EnvStateError(f"{where}: malformed saved state")
    kind = node["kind"]
    if kind == "skip":
        return template
    if kind == "ref":
        if node.get("path") not in done:
            raise EnvStateError(f"{where}: refers to {node.get('path')!r}, not restored")
        return done[node["path"]]
    value = _decode_new(node, kind, template, where, done)
    done.setdefault(where, value)
    return value


def _decode_new(node: dict, kind: str, template: Any, where: str, done: dict[str, Any]) -> Any:
    if kind in ("ndarray", "npscalar"):
        data = node["data"]
        if not isinstance(data, torch.Tensor) or data.dtype != torch.uint8:
            raise EnvStateError(f"{where}: malformed array")
        dtype = np.dtype(str(node["dtype"]))
        if dtype.hasobject:
            raise EnvStateError(f"{where}: an object array cannot be restored")
        arr = np.frombuffer(data.numpy().tobytes(), dtype=dtype).reshape(
            [int(n) for n in node["shape"]]).copy()
        return arr if kind == "ndarray" else arr[()]
    if kind == "generator":
        state = _decode(node["state"], None, f"{where}.<state>", done)
        name = state.get("bit_generator") if isinstance(state, dict) else None
        if not isinstance(template, np.random.Generator):
            if name not in _BIT_GENERATORS:
                raise EnvStateError(f"{where}: unknown bit generator {name!r}")
            template = np.random.Generator(getattr(np.random, name)())
        try:
            template.bit_generator.state = state
        except (TypeError, ValueError, KeyError) as err:
            raise EnvStateError(f"{where}: {err}") from None
        return template
    if kind == "randomstate":
        if not isinstance(template, np.random.RandomState):
            template = np.random.RandomState()
        try:
            template.set_state(_decode(node["state"], None, f"{where}.<state>", done))
        except (TypeError, ValueError, KeyError) as err:
            raise EnvStateError(f"{where}: {err}") from None
        return template
    if kind == "random":
        if not isinstance(template, random.Random) or type(template) is not random.Random:
            template = random.Random()
        try:
            template.setstate(_decode(node["state"], None, f"{where}.<state>", done))
        except (TypeError, ValueError) as err:
            raise EnvStateError(f"{where}: {err}") from None
        return template
    if kind in ("list", "tuple", "deque"):
        items = node["items"]
        fresh = list(template) if isinstance(template, (list, tuple, collections.deque)) \
            and len(template) == len(items) else [None] * len(items)
        values = [_decode(x, t, f"{where}[{i}]", done)
                  for i, (x, t) in enumerate(zip(items, fresh, strict=True))]
        if kind == "list":
            return values
        if kind == "tuple":
            return tuple(values)
        maxlen = node.get("maxlen")
        return collections.deque(values, maxlen=None if maxlen is None else int(maxlen))
    if kind == "dict":
        fresh = template if isinstance(template, dict) else {}
        out = {k: _decode(v, fresh.get(k), f"{where}[{k!r}]", done)
               for k, v in zip(node["keys"], node["values"], strict=True)}
        return type(template)(out) if isinstance(template, collections.OrderedDict) else out
    if kind == "object":
        if template is None or _class_name(template) != node["class"] \
                or not isinstance(getattr(template, "__dict__", None), dict):
            raise EnvStateError(
                f"{where}: the saved env has a {node['class']} here, this env "
                f"{'nothing' if template is None else _class_name(template)}")
        done[where] = template  # before its attributes: they may refer back to it
        attrs = template.__dict__
        for name, value in node["attrs"].items():
            _check_field(template, name, value, f"{where}.{name}")
            attrs[name] = _decode(value, attrs.get(name), f"{where}.{name}", done)
        return template
    raise EnvStateError(f"{where}: unknown saved kind {kind!r}")
