"""Environment names: the built-in catalogue, plugins, and name resolution.

Three kinds of names resolve to an environment:

- Atari games, by short name (``Pong``, ``SpaceInvaders``) or any of the usual ids
  (``ALE/Pong-v5``, ``Pong-v5``, ``PongNoFrameskip-v4``, ``pong``). The catalogue is
  every ROM that ale-py ships.
- Classic control (``CartPole``, ``Acrobot``, ``MountainCar``; with Box actions
  ``Pendulum``, ``MountainCarContinuous``; or their gymnasium ids),
  and any other gymnasium id with the ``gym:`` prefix (``gym:LunarLander-v3``).
- Plugins: single-environment factories registered with :func:`register_env`, either
  directly (the decorator) or by an installed package that declares an entry point in
  the ``rlscale.envs`` group. An entry point names a callable that is called once, with
  no arguments, and registers its environments with :func:`register_env`.
- Environments of user code that is not packaged: ``module:EnvId`` (gymnasium's form:
  import ``module``, then resolve ``EnvId``, registered there with :func:`register_env`
  or ``gymnasium.register``), or :func:`import_env_module` (``--env-module``), which also
  lists the module in ``RLSCALE_ENV_MODULES`` so that processes started later import it.

A factory takes keyword options and returns one ``gymnasium.Env``; ``envs.make_vec``
vectorizes it. Nothing here imports the testbed (``rl``): plugins never need it.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import os
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

import gymnasium as gym

ENTRY_POINT_GROUP = "rlscale.envs"

ATARI = "atari"
CLASSIC = "classic"
GYM = "gym"
PLUGIN = "plugin"

# Short names for gymnasium's classic-control tasks (Discrete actions, then Box actions).
CLASSIC_CONTROL = {
    "CartPole": "CartPole-v1",
    "Acrobot": "Acrobot-v1",
    "MountainCar": "MountainCar-v0",
    "Pendulum": "Pendulum-v1",
    "MountainCarContinuous": "MountainCarContinuous-v0",
}


ENV_MODULES_VAR = "RLSCALE_ENV_MODULES"
"""Environment variable: comma-separated modules of user code that register environments,
imported before any name is resolved (``import_env_module`` adds to it)."""

class UnknownEnvError(ValueError):
    """An environment name that resolves to nothing; the message lists close names."""


@dataclass(frozen=True)
class EnvEntry:
    """One resolvable environment."""

    name: str
    """The canonical short name (what ``rlscale envs`` lists)."""
    kind: str
    """One of ``atari``, ``classic``, ``gym``, ``plugin``."""
    source: str
    """Where it comes from: ``ale-py ROMs``, ``gymnasium``, ``decorator: mod.fn`` or
    ``entry point NAME (package DIST)``."""
    target: str
    """What the backend is given: an ALE ROM id, a gymnasium id, or the plugin name."""
    factory: Callable[..., gym.Env] | None = None
    """Single-environment factory (plugins only)."""


_plugins: dict[str, EnvEntry] = {}
_plugin_errors: list[str] = []
_loading_source: str | None = None  # set while an entry point runs, to label what it adds
_entry_points_loaded = False


def register_env(
    name: str, *, overwrite: bool = False
) -> Callable[[Callable[..., gym.Env]], Callable[..., gym.Env]]:
    """Register a single-environment factory under ``name`` (a decorator).

    The factory takes keyword options and returns one ``gymnasium.Env``. Example::

        @register_env("MyGridWorld")
        def make_grid(**options):
            return MyGridWorld(**options)
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-/]+", name):
        raise ValueError(
            f"environment name {name!r} is not valid: use letters, digits, '_', '-', '.', '/'"
        )
    if name.startswith("gym:"):
        raise ValueError(f"environment name {name!r} must not start with 'gym:' (reserved)")

    def decorate(factory: Callable[..., gym.Env]) -> Callable[..., gym.Env]:
        if not callable(factory):
            raise TypeError(f"register_env({name!r}) needs a callable factory, got {factory!r}")
        if name in _plugins and not overwrite and not _same_factory(_plugins[name].factory,
                                                                    factory):
            raise ValueError(
                f"environment {name!r} is already registered by {_plugins[name].source}; "
                "pass overwrite=True to replace it"
            )
        source = _loading_source or f"decorator: {factory.__module__}.{factory.__qualname__}"
        _plugins[name] = EnvEntry(name, PLUGIN, source, name, factory)
        return factory

    return decorate


def _same_factory(a: Callable | None, b: Callable) -> bool:
    """The same function, or one defined at the same place (its module imported again)."""
    return a is b or (a is not None and getattr(a, "__module__", None) == b.__module__
                      and getattr(a, "__qualname__", None) == getattr(b, "__qualname__", 0))


def unregister_env(name: str) -> None:
    """Remove a plugin registration (mainly for tests)."""
    _plugins.pop(name, None)


def load_entry_points(*, reload: bool = False) -> list[str]:
    """Run every ``rlscale.envs`` entry point once; return the errors met (also warned)."""
    global _entry_points_loaded, _loading_source
    if _entry_points_loaded and not reload:
        return list(_plugin_errors)
    _entry_points_loaded = True
    _plugin_errors.clear()
    for module in filter(None, os.environ.get(ENV_MODULES_VAR, "").split(",")):
        try:
            import_env_module(module.strip())
        except Exception as exc:  # reported like a broken plugin
            msg = f"{ENV_MODULES_VAR} module {module!r} failed to import: {exc}"
            _plugin_errors.append(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "unknown package"
        _loading_source = f"entry point {ep.name} (package {dist})"
        try:
            hook = ep.load()
            if callable(hook):
                hook()
        except Exception as exc:  # a broken plugin must not break the testbed
            msg = f"plugin entry point {ep.name!r} ({dist}) failed to load: {exc}"
            _plugin_errors.append(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
        finally:
            _loading_source = None
    return list(_plugin_errors)


def import_env_module(module: str, *, export: bool = False) -> None:
    """Import ``module``, user code that registers environments (``register_env`` or
    ``gymnasium.register``), from the Python path or else the working directory.

    ``export``: also add it to ``RLSCALE_ENV_MODULES``, so that processes started from here
    (data-parallel ranks, sweep workers) import it too. A module that is not found raises
    :class:`UnknownEnvError`; errors inside the module propagate as they are.
    """
    if not isinstance(module, str) or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", module):
        raise UnknownEnvError(f"{module!r} is not a module name (e.g. my_envs or pkg.envs)")
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module.startswith(exc.name):
            raise  # a package the module itself imports is missing: its own error says which
        top = os.path.join(os.getcwd(), module.split(".")[0])
        if os.getcwd() in sys.path or not (os.path.isdir(top) or os.path.isfile(top + ".py")):
            raise UnknownEnvError(
                f"cannot import the environment module {module!r}: it is not on the Python "
                "path; run from the folder that holds it or add that folder to PYTHONPATH"
            ) from None
        sys.path.append(os.getcwd())  # an unpackaged module in the working directory
        importlib.import_module(module)
        if export:  # processes started from here find it there too
            paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
            os.environ["PYTHONPATH"] = os.pathsep.join([*paths, os.getcwd()])
    if export:
        listed = [m for m in os.environ.get(ENV_MODULES_VAR, "").split(",") if m]
        if module not in listed:
            os.environ[ENV_MODULES_VAR] = ",".join([*listed, module])


def _resolve_module_form(env_id: str) -> EnvEntry:
    """``module:EnvId``: import the module, then the name it registered (ours or gymnasium's)."""
    module, _, name = env_id.partition(":")
    import_env_module(module)
    if name in _plugins:
        return _plugins[name]
    if name in gym.registry:
        return EnvEntry(name, GYM, f"gymnasium (registered by {module})", name)
    raise UnknownEnvError(
        f"module {module!r} registered no environment {name!r} (with envs.register_env or "
        "gymnasium.register); check the name it registers"
    )


@functools.cache
def atari_games() -> dict[str, str]:
    """CamelCase short name -> ALE ROM id, for every ROM ale-py ships."""
    try:
        from ale_py import roms
    except ImportError:  # pragma: no cover - ale-py is a core dependency
        return {}
    return {_camel(rom): rom for rom in roms.get_all_rom_ids()}


def _camel(rom_id: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in rom_id.split("_"))


def _atari_key(name: str) -> str:
    """Strip the usual decorations: ``ALE/Pong-v5``, ``PongNoFrameskip-v4`` -> ``pong``."""
    base = name.split("/", 1)[1] if name.startswith("ALE/") else name
    base = re.sub(r"(NoFrameskip|Deterministic)?-v\d+$", "", base)
    return base.replace("_", "").lower()


def list_envs() -> list[EnvEntry]:
    """Everything resolvable by name, plugins first, then classic control, then Atari."""
    load_entry_points()
    out = sorted(_plugins.values(), key=lambda e: e.name)
    out += [EnvEntry(k, CLASSIC, "gymnasium", v) for k, v in CLASSIC_CONTROL.items()]
    out += [EnvEntry(k, ATARI, "ale-py ROMs", v) for k, v in sorted(atari_games().items())]
    return out


def resolve(env_id: str) -> EnvEntry:
    """Turn a user-facing name into an :class:`EnvEntry`, or raise :class:`UnknownEnvError`."""
    if not isinstance(env_id, str) or not env_id.strip():
        raise UnknownEnvError(f"environment name must be a non-empty string, got {env_id!r}")
    env_id = env_id.strip()
    if env_id.startswith("gym:"):
        gym_id = env_id[4:]
        if gym_id not in gym.registry:
            close = difflib.get_close_matches(gym_id, list(gym.registry), n=5, cutoff=0.6)
            hint = f" Close gymnasium ids: {', '.join(close)}." if close else ""
            raise UnknownEnvError(
                f"gymnasium has no environment {gym_id!r}.{hint} If it comes from another "
                "package, install and import that package first, or register a factory."
            )
        return EnvEntry(gym_id, GYM, "gymnasium", gym_id)
    load_entry_points()
    if ":" in env_id:
        return _resolve_module_form(env_id)
    if env_id in _plugins:
        return _plugins[env_id]
    lowered = {name.lower(): name for name in _plugins}
    if env_id.lower() in lowered:
        return _plugins[lowered[env_id.lower()]]
    for short, gym_id in CLASSIC_CONTROL.items():
        if env_id.lower() in (short.lower(), gym_id.lower()):
            return EnvEntry(short, CLASSIC, "gymnasium", gym_id)
    key = _atari_key(env_id)
    for short, rom in atari_games().items():
        if key == short.lower():
            return EnvEntry(short, ATARI, "ale-py ROMs", rom)
    by_lower = {e.name.lower(): e.name for e in list_envs()}
    close = difflib.get_close_matches(env_id.lower(), list(by_lower), n=5, cutoff=0.5)
    close += [c for c in difflib.get_close_matches(key, list(by_lower), n=5) if c not in close]
    close = [by_lower[c] for c in close[:5]]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownEnvError(
        f"unknown environment {env_id!r}.{hint} Run `rlscale envs` to list every name; "
        "use the prefix 'gym:' for any gymnasium id."
    )
