"""``make_vec``: an environment name + count + seed -> a :class:`envs.vector.VecEnv`."""

from __future__ import annotations

import functools
import importlib.util
import numbers

import gymnasium as gym

from envs import atari
from envs.registry import ATARI, CLASSIC, GYM, PLUGIN, EnvEntry, resolve
from envs.vector import GymnasiumRaw, VecEnv, async_vector_env

ATARI_BACKENDS = ("envpool", "ale", "gym-sync", "gym-async")
GYM_BACKENDS = ("gym-vector", "gym-sync", "gym-async")
BACKENDS = ATARI_BACKENDS + ("gym-vector",)
BACKEND_ALIASES = {"gymnasium": "gym-sync", "gym": "gym-sync", "ale-py": "ale", "ale_py": "ale"}
# Backend -> (module to import, pip package that provides it).
_BACKEND_PACKAGES = {"envpool": ("envpool", "envpool"), "ale": ("ale_py", "ale-py")}
MAX_SEED = 2**31 - 1  # envpool and ALE take 32-bit seeds; each env uses seed + index


# Vector entry points that are plain numpy (no threads, no JAX): fast, and picklable, so a
# trainer can checkpoint them. Ids whose vector entry point lives here default to gym-vector.
_NUMPY_VECTOR_MODULES = ("gymnasium.envs.classic_control.",)


def vector_entry_point(gym_id: str) -> str | None:
    """The gymnasium id's vector entry point (``module:Class``), or None if it has none."""
    try:
        ep = gym.spec(gym_id).vector_entry_point
    except gym.error.Error:
        return None
    if ep is None:
        return None
    return ep if isinstance(ep, str) else f"{ep.__module__}:{ep.__qualname__}"


def default_backend(kind: str, target: str | None = None) -> str:
    """The backend ``make_vec`` uses when none is named.

    Atari: envpool where it is installed, else ale-py. Classic control and gymnasium ids
    (``target`` is the gymnasium id): ``gym-vector`` where gymnasium ships a numpy-vectorized
    version (CartPole), else ``gym-sync``. Plugins: ``gym-sync``.
    """
    if kind == ATARI:
        return "envpool" if importlib.util.find_spec("envpool") is not None else "ale"
    if kind in (CLASSIC, GYM) and target is not None:
        ep = vector_entry_point(target)
        if ep is not None and ep.startswith(_NUMPY_VECTOR_MODULES):
            return "gym-vector"
    return "gym-sync"


def _check_count(num_envs) -> int:
    if isinstance(num_envs, bool) or not isinstance(num_envs, numbers.Integral) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
    return int(num_envs)


def _check_seed(seed, num_envs: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not 0 <= seed <= MAX_SEED - num_envs:
        raise ValueError(
            f"seed must be in [0, {MAX_SEED - num_envs}] for {num_envs} envs "
            f"(env i uses seed + i, a 32-bit value), got {seed}"
        )
    return int(seed)


def _check_backend(backend: str | None, entry: EnvEntry) -> str:
    if backend is None:
        return default_backend(entry.kind, entry.target)
    backend = BACKEND_ALIASES.get(backend, backend)
    allowed = ATARI_BACKENDS if entry.kind == ATARI else GYM_BACKENDS
    if backend == "gym-vector" and entry.kind != ATARI and (
            entry.kind == PLUGIN or vector_entry_point(entry.target) is None):
        allowed = tuple(b for b in allowed if b != "gym-vector")
        raise ValueError(
            f"backend 'gym-vector' cannot run {entry.name!r}: gymnasium has no vectorized "
            f"version of it (no vector entry point); choose one of {', '.join(allowed)}"
        )
    if backend not in allowed:
        raise ValueError(
            f"backend {backend!r} cannot run {entry.name!r} ({entry.kind}); "
            f"choose one of {', '.join(allowed)}"
        )
    if backend in _BACKEND_PACKAGES:
        module, package = _BACKEND_PACKAGES[backend]
        if importlib.util.find_spec(module) is None:
            other = [b for b in allowed if b != backend]
            raise ModuleNotFoundError(
                f"backend {backend!r} needs the package {package!r}, which is not installed: "
                f"pip install {package} (or choose --backend {other[0]})"
            )
    return backend


def make_env(env_id: str, *, preset=None, **options) -> gym.Env:
    """One (unvectorized) environment, preprocessed as ``make_vec`` would.

    For Atari this is gymnasium's ALE env with the preset's wrappers (the gymnasium
    backend's single env); its reward is unclipped and it carries no life-loss signal,
    both of which ``VecEnv`` adds.
    """
    entry = resolve(env_id)
    if entry.kind == ATARI:
        return atari.make_single_atari(entry.target, atari.get_preset(preset), **options)
    if preset is not None:
        raise ValueError(f"presets apply to Atari games only; {entry.name!r} is {entry.kind}")
    if entry.kind == PLUGIN:
        return entry.factory(**options)
    return gym.make(entry.target, **options)


def make_vec(
    env_id: str,
    num_envs: int,
    seed: int = 0,
    *,
    backend: str | None = None,
    preset: str | atari.AtariPreset | None = None,
    **options,
) -> VecEnv:
    """Build a vector env for ``env_id`` with ``num_envs`` copies; env i is seeded seed + i.

    Args:
        env_id: a short name (``Pong``, ``CartPole``), a plugin name, or ``gym:<id>``.
        num_envs: number of environments (>= 1).
        seed: base seed; the first ``reset()`` uses it.
        backend: Atari: ``envpool`` (default), ``ale``, ``gym-sync``, ``gym-async``; other
            environments: ``gym-vector`` (default where gymnasium ships a numpy-vectorized
            version, i.e. CartPole: one numpy array op per step for all envs), ``gym-sync``
            (default otherwise; a Python loop over single envs) or ``gym-async``.
            ``gym-vector`` draws every env's start from one generator seeded with ``seed``
            (not seed + i); it is deterministic by seed and picklable like ``gym-sync``.
        preset: Atari preprocessing preset name (``standard`` default, ``machado``).
        **options: Atari: fields of :class:`envs.atari.AtariPreset` to override; other
            environments: keyword arguments for the environment's constructor.

    Every check runs before anything is started.
    """
    entry = resolve(env_id)
    num_envs = _check_count(num_envs)
    seed = _check_seed(seed, num_envs)
    backend = _check_backend(backend, entry)
    desc = {"env": entry.name, "backend": backend}

    if entry.kind == ATARI:
        p = atari.get_preset(preset)
        if options:
            p = atari.preset_with(p, **options)
        desc["preset"] = p.name
        if backend == "envpool":
            raw = atari.EnvpoolRaw(entry.target, num_envs, seed, p)
        elif backend == "ale":
            raw = atari.AleVectorRaw(entry.target, num_envs, p)
        else:
            raw = atari.gym_atari_raw(entry.target, num_envs, p, backend.removeprefix("gym-"))
        return VecEnv(
            raw,
            seed=seed,
            clip_rewards=p.clip_rewards,
            life_loss_terminates=p.life_loss_terminates,
            fire_action=(atari.fire_action(entry.target, p.full_action_space)
                         if p.fire_after_life_loss else None),
            frames_per_step=p.frame_skip,
            description=desc,
        )

    if preset is not None:
        raise ValueError(f"presets apply to Atari games only; {entry.name!r} is {entry.kind}")
    if backend == "gym-vector":
        return VecEnv(GymnasiumRaw(_gym_vector(entry, num_envs, options), checkpointable=True),
                      seed=seed, description=desc)
    # partial, not lambda: a vector env of picklable factories can itself be pickled,
    # which is what lets a trainer checkpoint the exact environment state.
    if entry.kind == PLUGIN:
        fns = [functools.partial(entry.factory, **options)] * num_envs
    else:
        assert entry.kind in (CLASSIC, GYM)
        fns = [functools.partial(gym.make, entry.target, **options)] * num_envs
    vec = async_vector_env(fns) if backend == "gym-async" else gym.vector.SyncVectorEnv(fns)
    return VecEnv(GymnasiumRaw(vec), seed=seed, description=desc)


def _gym_vector(entry: EnvEntry, num_envs: int, options: dict) -> gym.vector.VectorEnv:
    """gymnasium's own vectorized env (``make_vec`` with the vector entry point).

    Its state is numpy arrays and one random generator, so it pickles, and a trainer
    checkpoint restores it exactly.
    """
    try:
        return gym.make_vec(entry.target, num_envs=num_envs,
                            vectorization_mode="vector_entry_point", **options)
    except TypeError as exc:
        raise ValueError(
            f"{entry.name!r} with backend 'gym-vector' does not take the options "
            f"{sorted(options)} ({exc}); pass backend='gym-sync' to use the single-env "
            "constructor's options"
        ) from None
