"""What a training run is told: its config dataclasses, presets, device and results.

``TrainConfig`` (the run), ``ParallelConfig`` (data-parallel processes), ``PPOOverride``
(PPO hyperparameters set from outside a run, e.g. by PBT) and ``TrainResult``. The PPO
settings themselves are ``agents.PPOConfig``. Every field's docstring is its ``--help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import torch

import envs
from agents import PPOConfig
from rl.measure.ppo_noise import check_settings

TIMING_COLUMNS = ("wall_time_s", "sps", "rollout_s", "update_s")
"""Metrics columns that measure time (they differ between otherwise equal runs)."""


def parse_count(text: str) -> int:
    """``10M`` -> 10_000_000, ``500k`` -> 500_000, ``1e6`` -> 1_000_000."""
    s = str(text).strip().replace("_", "")
    mult = {"k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}.get(s[-1:].lower(), 1)
    if mult != 1:
        s = s[:-1]
    try:
        value = float(s) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (e.g. 500k, 10M)") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite count: {text!r} (e.g. 500k, 10M)")
    if value != int(value):
        raise argparse.ArgumentTypeError(f"not a whole count: {text!r}")
    return int(value)


class NonFiniteLossError(RuntimeError):
    """Training produced a non-finite loss or parameter; the run stops."""


@dataclass
class TrainConfig:
    """One training run: environment, rollout shape, budget, device, run directory."""

    env: str = "CartPole"
    """Environment name (see `rlscale envs`)."""
    num_envs: int = 8
    """Parallel environments; rollout batch size = num_envs x num_steps agent steps."""
    num_steps: int = 128
    """Agent steps per environment per rollout."""
    total_agent_steps: int = 10_000_000
    """Training budget in agent steps (Atari: frames = 4 x agent steps)."""
    seed: int = 0
    """Base seed (environments, network init, action sampling, minibatch order)."""
    backend: str | None = None
    """Environment backend (Atari: envpool, ale, gym-sync, gym-async; other envs: gym-vector,
    gym-sync, gym-async); default per env."""
    env_preset: str | None = None
    """Atari preprocessing preset: standard (default) or machado."""
    network: str = "auto"
    """Network: auto, nature, impala, small, mlp."""
    device: str = "auto"
    """Device: auto (cuda if available, else cpu), cpu, cuda, cuda:N."""
    bf16: bool = False
    """CUDA only: bfloat16 autocast for forward passes (statistics stay fp32)."""
    compile: bool = False
    """torch.compile the network in place (inductor; on the CPU it needs a C++ compiler).
    Whether it pays: rlscale bench flops (BENCHMARKS.md)."""
    cpu_bf16: bool = False
    """CPU only: bfloat16 autocast for forward passes, network outputs cast back to fp32
    (losses and noise-scale statistics stay fp32); pays off on CPUs with AMX/AVX512-BF16."""
    channels_last_memory: bool | None = None
    """Keep CNN weights and their input in channels-last (NHWC) memory format (same values,
    faster oneDNN convolutions on CPU); none: on for the CPU, off on CUDA."""
    torch_threads: int = 0
    """torch CPU threads during the run (0: torch's default); 1 is often fastest for small
    networks on a few shared cores."""
    run_dir: str | None = None
    """Run directory. rlscale train's default: a new folder per run,
    runs/<env>-<num_envs>x<num_steps>-seed<seed>-<date-time>-<settings hash>, with runs/latest
    pointing at the newest (the library's train(): runs/<env>-<num_envs>x<num_steps>-seed<seed>)."""
    resume: bool = False
    """Continue the run in run_dir from its newest checkpoint (refused if it has no usable
    one: --restart starts it over instead)."""
    checkpoint_every: int = 10
    """Checkpoint every this many PPO iterations (a crash loses at most this many)."""
    target_return: float | None = None
    """Stop once the mean return over the last return_window games reaches this."""
    return_window: int = 20
    """Games in the smoothed episodic return (metrics column return_recent)."""
    gns_every: int = 10
    """Measure the gradient noise scale every this many PPO iterations (0: never; <= 5% time)."""
    gns_groups: int = 8
    """Noise scale: rollout groups of whole environments (at most num_envs; where num_envs is
    not a multiple, the count leaving the fewest out), of steps with one env; K >= 2."""
    gns_preconditioned: bool = False
    """Noise scale of Adam-preconditioned gradients (g / (sqrt(v_hat) + eps))."""
    log_std_init: float = 0.0
    """Continuous (Box) actions: initial log standard deviation of the Gaussian policy
    (0: std 1, as SB3 and CleanRL)."""
    state_dependent_std: bool = False
    """Continuous (Box) actions: the log standard deviation is a linear head on the actor's
    features instead of one learned vector for all states."""
    norm_obs: bool = False
    """Normalize observations by their running mean and standard deviation (envs.NormalizeVec,
    as gymnasium's NormalizeObservation / SB3's VecNormalize); the statistics are saved in
    checkpoints."""
    norm_reward: bool = False
    """Scale training rewards by the running standard deviation of the discounted return
    (gamma: the PPO gamma); reported returns stay unnormalized."""
    norm_obs_clip: float = 10.0
    """With norm_obs: clip normalized observations to [-this, this]."""
    norm_reward_clip: float = 10.0
    """With norm_reward: clip scaled rewards to [-this, this]."""

    @property
    def rollout_batch_size(self) -> int:
        return self.num_envs * self.num_steps

    def resolved_run_dir(self) -> Path:
        if self.run_dir:
            return Path(self.run_dir)
        name = self.env.replace("/", "_").replace(":", "_")
        return Path("runs") / f"{name}-{self.num_envs}x{self.num_steps}-seed{self.seed}"

    def validate(self) -> None:
        for name in ("num_envs", "num_steps", "total_agent_steps", "checkpoint_every",
                     "return_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.total_agent_steps < self.rollout_batch_size:
            raise ValueError(
                f"total_agent_steps={self.total_agent_steps} is less than one rollout "
                f"({self.num_envs} x {self.num_steps} = {self.rollout_batch_size} agent steps); "
                "raise --total-agent-steps or shrink the rollout"
            )
        if self.target_return is not None and (
                isinstance(self.target_return, bool)
                or not isinstance(self.target_return, (int, float))
                or not math.isfinite(self.target_return)):
            raise ValueError(f"target_return must be a finite number or none, "
                             f"got {self.target_return!r}")
        for name in ("log_std_init", "norm_obs_clip", "norm_reward_clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or (name != "log_std_init" and value <= 0):
                rule = "a finite number" if name == "log_std_init" else "a finite number > 0"
                raise ValueError(f"{name} must be {rule}, got {value!r}")
        resolve_device(self.device)
        if isinstance(self.torch_threads, bool) or not isinstance(self.torch_threads, int) \
                or self.torch_threads < 0:
            raise ValueError(f"torch_threads must be >= 0 (0: torch's default), "
                             f"got {self.torch_threads!r}")
        check_settings(self.gns_every, self.gns_groups, self.num_envs, self.num_steps)


OPTIONAL_KEYS = ("log_std_init", "state_dependent_std", "norm_obs", "norm_reward",
                 "norm_obs_clip", "norm_reward_clip")
"""TrainConfig fields added with continuous actions: left out of a run's config.json at
their defaults, so that runs started before them still resume (``config_dict``)."""


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """``dataclasses.asdict(cfg)`` without the ``OPTIONAL_KEYS`` at their default values."""
    out = dataclasses.asdict(cfg)
    for name in OPTIONAL_KEYS:
        if out[name] == getattr(TrainConfig, name):
            del out[name]
    return out


RESUMABLE_CHANGES = ("train.total_agent_steps", "train.resume", "train.device",
                     "train.checkpoint_every", "train.run_dir", "train.compile",
                     "train.gns_every", "train.gns_groups", "train.gns_preconditioned",
                     "train.cpu_bf16", "train.channels_last_memory", "train.torch_threads")
"""Keys of the resolved config that a resumed run may change."""

PRESETS: dict[str, tuple[dict, dict]] = {
    "atari": (
        dict(num_envs=8, num_steps=128, total_agent_steps=10_000_000, network="nature"),
        {},  # PPOConfig defaults are the Atari reference settings
    ),
    "continuous": (
        dict(num_envs=4, num_steps=1024, total_agent_steps=200_000, network="mlp",
             checkpoint_every=10),
        dict(learning_rate=1e-3, anneal_lr=False, num_epochs=10, num_minibatches=64,
             gamma=0.9, gae_lambda=0.95, clip_coef=0.2, clip_value_loss=False, ent_coef=0.0),
    ),
    "classic": (
        dict(num_envs=8, num_steps=32, total_agent_steps=100_000, network="mlp",
             checkpoint_every=25),
        dict(learning_rate=1e-3, num_epochs=20, num_minibatches=1, gamma=0.98,
             gae_lambda=0.8, clip_coef=0.2, clip_value_loss=False, ent_coef=0.0),
    ),
}
"""Reference settings per family (docs/design.md for Atari; a fast CartPole setting; for
continuous (Box) actions rl-zoo's PPO settings for Pendulum-v1, without gSDE: 64 samples
per minibatch): (TrainConfig changes, PPOConfig changes)."""


def preset_for(env_id: str) -> str:
    """atari for Atari games; continuous where the env's actions are a Box (one env is
    built to find out); classic otherwise."""
    entry = envs.resolve(env_id)
    if entry.kind == "atari":
        return "atari"
    try:
        env = envs.make_env(env_id)
    except Exception:  # e.g. a plugin factory that needs options: the run itself reports
        return "classic"  # the env's error; the preset is only a default
    try:
        box = isinstance(env.action_space, gym.spaces.Box)
    finally:
        env.close()
    return "continuous" if box else "classic"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return dev


def uses_channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether the run keeps CNN weights channels-last (``channels_last_memory``; None: CPU)."""
    if cfg.channels_last_memory is None:
        return device.type == "cpu"
    return bool(cfg.channels_last_memory)


@dataclass
class ParallelConfig:
    """Data-parallel training (rl/train/launch.py)."""

    nproc: int = 1
    """Data-parallel processes (each runs num_envs envs; B = nproc x num_envs x num_steps)."""
    dist_backend: Literal["auto", "gloo", "nccl"] = "auto"
    """torch.distributed backend: auto = nccl on CUDA, gloo on CPU."""

    def validate(self) -> None:
        n = self.nproc
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"nproc must be a positive integer, got {n!r}")
        if self.dist_backend not in ("auto", "gloo", "nccl"):
            raise ValueError(f"dist_backend must be auto, gloo or nccl, got {self.dist_backend!r}")


@dataclass(frozen=True)
class PPOOverride:
    """PPO hyperparameters set from outside a run, in force from this (re)start of it on.

    Population based training (``rl.sweeps.pbt``) continues a member from a checkpoint (its
    own, or a better member's) with new values: the loop trains with them (the learning
    rate schedule starts from the override's rate), while config.json keeps the settings
    the run was started with. Every metrics row of the process also records ``ent_coef``,
    ``clip_coef`` and ``columns``. See docs/sweeps.md.
    """

    learning_rate: float | None = None
    """Adam learning rate (None: the run's own)."""
    ent_coef: float | None = None
    """Weight of the entropy bonus (None: the run's own)."""
    clip_coef: float | None = None
    """Surrogate (and value) clipping coefficient (None: the run's own)."""
    columns: Mapping[str, Any] = field(default_factory=dict)
    """Extra values written into every metrics row of this process (e.g. the PBT member)."""

    def apply(self, ppo: PPOConfig) -> PPOConfig:
        """``ppo`` with the values given here (others unchanged)."""
        changes = {k: float(getattr(self, k)) for k in ("learning_rate", "ent_coef", "clip_coef")
                   if getattr(self, k) is not None}
        return dataclasses.replace(ppo, **changes)

    def row_columns(self, ppo: PPOConfig) -> dict[str, Any]:
        """The columns every row of an overridden run carries (``ppo``: the one in force)."""
        return {"ent_coef": ppo.ent_coef, "clip_coef": ppo.clip_coef, **self.columns}


@dataclass
class TrainResult:
    run_dir: Path
    iterations: int
    agent_steps: int
    return_recent: float
    reached_target: bool


def non_finite_advice(iteration: int, losses: list[float], run_dir, last: list[int]) -> str:
    """The non-finite-loss error's text: what happened and fixes that work."""
    return (
        f"non-finite loss at iteration {iteration} (policy_loss={losses[0]}, "
        f"value_loss={losses[1]}, entropy={losses[2]}); the last good checkpoint is "
        f"iteration {last[-1] if last else 'none'} in {run_dir}. A --resume continues this "
        "run with its own PPO settings (it may change only the budget, device, checkpoint "
        "and noise-scale cadence), so it would likely diverge again: start a new run in a "
        "new --run-dir with a lower --learning-rate (e.g. half of this one) or a smaller "
        "--max-grad-norm."
    )


@dataclass
class AdaptiveConfig:
    """The rollout batch-size schedule (rl/train/batch_schedule.py)."""

    batch_schedule: Literal["fixed", "adaptive"] = "fixed"
    """fixed, or adaptive: B grows as sqrt(measured B_simple) (needs --gns-every > 0)."""
    batch_axis: Literal["num_envs", "num_steps"] = "num_envs"
    """Adaptive: the factor of B = num_envs x num_steps that changes (in multiples of its start)."""
    batch_max: int | None = None
    """Adaptive: largest rollout batch in agent steps, all ranks (default: 16 x the start; the
    start, num_envs x num_steps, is the smallest)."""
    batch_scale: float | None = None
    """Adaptive: c in B = c sqrt(B_simple) (default: calibrated so B starts where it is)."""
    batch_lr_rule: Literal["constant", "sqrt", "linear"] = "constant"
    """Adaptive: learning rate x (B / B_start) ** p with p = 0, 1/2, 1."""
    batch_term: Literal["total", "policy", "value"] = "total"
    """Adaptive: the loss term whose noise scale the batch follows."""
    batch_beta: float = 0.8
    """Adaptive: EMA factor of the schedule's noise-scale smoother (per measurement)."""
    batch_warmup: int = 3
    """Adaptive: measurements before the first change (and the calibration of c), counted
    after the noise-scale warm-up (rl.measure.warmup)."""

    @property
    def adaptive(self) -> bool:
        return self.batch_schedule == "adaptive"

    def validate(self, gns_every: int | None = None) -> None:
        if self.batch_schedule not in ("fixed", "adaptive"):
            raise ValueError(f"batch_schedule must be fixed or adaptive, got "
                             f"{self.batch_schedule!r}")
        # The numbers are checked with a fixed schedule too: a bad one is a typo either way.
        v = self.batch_max
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"batch_max must be a positive integer or None, got {v!r}")
        if self.batch_scale is not None and not (self.batch_scale > 0
                                                 and math.isfinite(self.batch_scale)):
            raise ValueError(f"batch_scale must be > 0, got {self.batch_scale}")
        if not 0.0 <= self.batch_beta < 1.0:
            raise ValueError(f"batch_beta must be in [0, 1), got {self.batch_beta}")
        if isinstance(self.batch_warmup, bool) or not isinstance(self.batch_warmup, int) \
                or self.batch_warmup < 1:
            raise ValueError(f"batch_warmup must be an integer >= 1, got {self.batch_warmup!r}")
        for name, choices in (("batch_axis", ("num_envs", "num_steps")),
                              ("batch_lr_rule", ("constant", "sqrt", "linear")),
                              ("batch_term", ("total", "policy", "value"))):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.adaptive and gns_every is not None and gns_every < 1:
            raise ValueError("--batch-schedule adaptive follows the measured noise scale: "
                             "set --gns-every to a positive number of iterations (e.g. 2)")


# --- experiment tracking (Weights & Biases), beside TensorBoard ----------------------------

WANDB_MODES = ("offline", "online", "disabled")
"""Modes of ``wandb.init``: offline writes the run to disk only (``wandb sync`` uploads it)."""


@dataclass
class TrackConfig:
    """Optional Weights & Biases logging beside TensorBoard (rl/train/tracking.py). Not a
    setting of the run: it is not written to config.json and may change on --resume."""

    track: bool = False
    """Also log every metrics row to Weights & Biases under TensorBoard's grouped names
    (charts/, losses/, gns/); needs `pip install wandb`."""
    wandb_project: str = "rlscale"
    """W&B project of the run (with --track)."""
    wandb_entity: str | None = None
    """W&B user or team (with --track); none: your default entity."""
    wandb_mode: Literal["offline", "online", "disabled"] | None = None
    """W&B mode (with --track); none: $WANDB_MODE if set, else offline (files in the run
    directory's wandb/ folder, no network; `wandb sync` uploads them later)."""
    wandb_name: str | None = None
    """W&B run name and group (with --track); none: the run directory's name. A resumed run
    logs a new W&B run in the same group."""

    def resolved_mode(self) -> str:
        """--wandb-mode, else $WANDB_MODE, else offline (never the network unasked)."""
        mode = self.wandb_mode or os.environ.get("WANDB_MODE") or "offline"
        if mode not in WANDB_MODES:
            where = "--wandb-mode" if self.wandb_mode else "WANDB_MODE"
            raise ValueError(f"{where} must be one of {', '.join(WANDB_MODES)}, got {mode!r}")
        return mode

    def validate(self) -> None:
        if not isinstance(self.wandb_project, str) or not self.wandb_project.strip():
            raise ValueError(f"wandb_project must be a project name, got "
                             f"{self.wandb_project!r}; pass --wandb-project NAME")
        if self.track:
            self.resolved_mode()
