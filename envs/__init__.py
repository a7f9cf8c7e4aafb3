"""Environments: a name + count + seed -> a vectorized environment (see ``make_vec``).

This package never imports the testbed (``rl``); plugins register here.
"""

from envs.atari import PRESETS, AtariPreset
from envs.make import ATARI_BACKENDS, BACKENDS, default_backend, make_env, make_vec
from envs.normalize import NormalizeVec, RunningMeanStd
from envs.registry import (
    ENTRY_POINT_GROUP,
    EnvEntry,
    UnknownEnvError,
    import_env_module,
    list_envs,
    register_env,
    resolve,
    unregister_env,
)
from envs.vector import VecEnv

__all__ = [
    "ATARI_BACKENDS",
    "BACKENDS",
    "ENTRY_POINT_GROUP",
    "PRESETS",
    "AtariPreset",
    "EnvEntry",
    "NormalizeVec",
    "RunningMeanStd",
    "UnknownEnvError",
    "VecEnv",
    "default_backend",
    "import_env_module",
    "list_envs",
    "make_env",
    "make_vec",
    "register_env",
    "resolve",
    "unregister_env",
]
