"""Atari presets and the three Atari backends (envpool, ale-py vector, gymnasium).

Every backend is built with the same preset, set explicitly (the backends' own defaults
differ), and adapted to the raw contract of :mod:`envs.vector`: unclipped rewards,
``terminated`` only at game over, lives reported, next-step auto-reset. Reward clipping
and the life-loss signal are applied once, in :class:`envs.vector.VecEnv`, so they are
identical whichever backend runs.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from envs.vector import GymnasiumRaw, async_vector_env


@dataclass(frozen=True)
class AtariPreset:
    """Preprocessing applied to an Atari game, identical across backends."""

    name: str
    """Preset name (``standard`` or ``machado``)."""
    noop_max: int = 30
    """At most this many no-op actions after each reset (random count)."""
    frame_skip: int = 4
    """Emulator frames per agent step (the action repeats; the last two frames max-pooled)."""
    screen_size: int = 84
    """Observations are resized to screen_size x screen_size."""
    grayscale: bool = True
    """Grayscale observations (one channel per frame)."""
    frame_stack: int = 4
    """Number of most recent frames stacked along the channel axis."""
    fire_reset: bool = True
    """Press FIRE after reset in games that need it to start."""
    fire_after_life_loss: bool = True
    """In games with a FIRE action, the first step after a lost life executes FIRE whatever
    the agent chose, as the common wrappers do (``FireResetEnv`` over ``EpisodicLifeEnv``
    relaunches the ball in Breakout); the agent's action on that step has no effect."""
    life_loss_terminates: bool = True
    """A life loss ends the training episode (``terminated``); the game goes on."""
    clip_rewards: bool = True
    """Training reward clipped to [-1, 1]; reported returns stay unclipped."""
    sticky_action_prob: float = 0.0
    """Probability that the emulator repeats the previous action (Machado et al. 2018)."""
    full_action_space: bool = False
    """Use all 18 actions instead of the game's minimal set."""
    max_frames_per_episode: int = 108_000
    """Truncate a game after this many emulator frames (30 minutes at 60 Hz)."""

    @property
    def max_agent_steps_per_episode(self) -> int:
        return self.max_frames_per_episode // self.frame_skip


PRESETS = {
    # The common PPO/DQN preprocessing (docs/design.md "PPO reference settings").
    "standard": AtariPreset("standard"),
    # Machado et al. 2018: sticky actions 0.25, no life-loss signal, no no-op starts
    # (sticky actions supply the stochasticity), the full action set, no fire reset.
    "machado": AtariPreset(
        "machado",
        noop_max=0,
        fire_reset=False,
        fire_after_life_loss=False,
        life_loss_terminates=False,
        sticky_action_prob=0.25,
        full_action_space=True,
    ),
}


def get_preset(preset: str | AtariPreset | None) -> AtariPreset:
    if preset is None:
        return PRESETS["standard"]
    if isinstance(preset, AtariPreset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown Atari preset {preset!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[preset]


def preset_with(preset: AtariPreset, **overrides) -> AtariPreset:
    """A copy of ``preset`` with some fields changed (unknown fields are an error)."""
    fields = {f.name for f in dataclasses.fields(AtariPreset)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown Atari option(s) {unknown}; valid: {sorted(fields - {'name'})}")
    return dataclasses.replace(preset, **overrides)


def _camel(rom: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in rom.split("_"))


def fire_action(rom: str, full_action_space: bool) -> int | None:
    """Index of FIRE in the game's action set (minimal or full), or None if it has none."""
    return _fire_action(rom, bool(full_action_space))


@functools.cache
def _fire_action(rom: str, full_action_space: bool) -> int | None:
    import ale_py

    ale = ale_py.ALEInterface()
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale.loadROM(ale_py.roms.get_rom_path(rom))
    actions = list(ale.getLegalActionSet() if full_action_space else ale.getMinimalActionSet())
    fire = ale_py.Action.FIRE
    return actions.index(fire) if fire in actions else None


# --- envpool ---------------------------------------------------------------------------


def envpool_task(rom: str) -> str:
    """envpool's task id for a ROM name (``pong`` -> ``Pong-v5``)."""
    return f"{_camel(rom)}-v5"


def envpool_options(preset: AtariPreset) -> dict:
    """``envpool.make`` keyword arguments that apply ``preset``, every value set explicitly.

    ``episodic_life=False`` and ``reward_clip=False`` give the raw contract (game-over
    ``terminated``, unclipped reward); VecEnv adds life loss and clipping.
    """
    p = preset
    return dict(
        episodic_life=False,
        reward_clip=False,
        noop_max=max(p.noop_max, 1),  # envpool draws from [0, noop_max): 1 means none
        frame_skip=p.frame_skip,
        stack_num=p.frame_stack,
        img_height=p.screen_size,
        img_width=p.screen_size,
        gray_scale=p.grayscale,
        use_fire_reset=p.fire_reset,
        repeat_action_probability=p.sticky_action_prob,
        full_action_space=p.full_action_space,
        max_episode_steps=p.max_agent_steps_per_episode,
    )


class EnvpoolRaw:
    """envpool's gymnasium-style Atari pool, configured from a preset.

    envpool takes its seed at construction, so a reset with a new seed rebuilds the pool.
    With ``episodic_life=False`` its ``terminated`` marks game over only, and with
    ``reward_clip=False`` the reward is unclipped: both are what the raw contract wants.
    """

    def __init__(self, rom: str, num_envs: int, seed: int, preset: AtariPreset):
        import envpool

        self._rom, self._preset = rom, preset
        self.num_envs = num_envs
        self._task = envpool_task(rom)
        if self._task not in envpool.list_all_envs():
            raise ValueError(
                f"envpool has no Atari game {self._task!r}; use --backend ale or gym-sync"
            )
        self._make = envpool.make
        self._pool = self._build(seed)
        self._seed = seed
        self.single_observation_space = self._pool.observation_space
        self.single_action_space = self._pool.action_space

    def _build(self, seed: int):
        return self._make(self._task, env_type="gymnasium", num_envs=self.num_envs, seed=seed,
                          **envpool_options(self._preset))

    def reset(self, seed):
        if seed is not None and seed != self._seed:
            self._pool.close()
            self._pool = self._build(seed)
            self._seed = seed
        obs, _ = self._pool.reset()
        return obs

    def step(self, actions):
        obs, reward, terminated, truncated, info = self._pool.step(
            np.asarray(actions, dtype=np.int32)
        )
        return obs, reward, terminated, truncated, info["lives"]

    def close(self):
        self._pool.close()


# --- ale-py's C++ vector env -------------------------------------------------------------


class AleVectorRaw(GymnasiumRaw):
    """ale-py's ``AtariVectorEnv`` (threads in C++), configured from a preset.

    Its own ``episodic_life`` resets the whole game at every life loss, so it is left off
    and the life-loss signal comes from the lives counter like for every backend.
    """

    def __init__(self, rom: str, num_envs: int, preset: AtariPreset):
        from ale_py.vector_env import AtariVectorEnv

        p = preset
        vec = AtariVectorEnv(
            rom,
            num_envs,
            max_num_frames_per_episode=p.max_frames_per_episode,
            repeat_action_probability=p.sticky_action_prob,
            full_action_space=p.full_action_space,
            img_height=p.screen_size,
            img_width=p.screen_size,
            grayscale=p.grayscale,
            stack_num=p.frame_stack,
            frameskip=p.frame_skip,
            noop_max=p.noop_max,
            episodic_life=False,
            life_loss_info=False,
            reward_clipping=False,
            use_fire_reset=p.fire_reset,
        )
        super().__init__(vec, lives_key="lives")


# --- gymnasium's vector envs over single ALE envs ----------------------------------------


class FireReset(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Press FIRE once after each reset, for games that wait for it (e.g. Breakout)."""

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        meanings = env.unwrapped.get_action_meanings()
        self._fire = meanings.index("FIRE") if "FIRE" in meanings else None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        if self._fire is not None:
            obs, _, terminated, truncated, info = self.env.step(self._fire)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


def make_single_atari(rom: str, preset: AtariPreset, **kwargs) -> gym.Env:
    """One ALE game with the preset's preprocessing, from gymnasium's own wrappers."""
    import ale_py

    gym.register_envs(ale_py)
    env = gym.make(
        f"ALE/{_camel(rom)}-v5",
        frameskip=1,  # AtariPreprocessing skips frames (and max-pools the last two)
        repeat_action_probability=preset.sticky_action_prob,
        full_action_space=preset.full_action_space,
        max_num_frames_per_episode=preset.max_frames_per_episode,
        **kwargs,
    )
    env = gym.wrappers.AtariPreprocessing(
        env,
        noop_max=preset.noop_max,
        frame_skip=preset.frame_skip,
        screen_size=preset.screen_size,
        terminal_on_life_loss=False,
        grayscale_obs=preset.grayscale,
    )
    if preset.fire_reset:
        env = FireReset(env)
    return gym.wrappers.FrameStackObservation(env, preset.frame_stack)


def gym_atari_raw(rom: str, num_envs: int, preset: AtariPreset, mode: str) -> GymnasiumRaw:
    fns = [lambda: make_single_atari(rom, preset) for _ in range(num_envs)]
    if mode == "async":
        return GymnasiumRaw(async_vector_env(fns), lives_key="lives")
    return GymnasiumRaw(gym.vector.SyncVectorEnv(fns), lives_key="lives")
