"""The PPO training loop: rollout -> GAE -> update -> metrics -> run directory.

One PPO iteration collects ``num_envs x num_steps`` agent steps (the rollout batch size),
computes advantages, runs the update epochs, and writes one metrics row. Checkpoints are
taken every ``checkpoint_every`` iterations; ``resume`` continues from the newest one.

Resume is exact where the environments can be saved: for vector envs whose state is
Python/numpy objects (gymnasium sync vector envs of Python environments, gymnasium's numpy
CartPole) the checkpoint holds that state as arrays (``rl.envstate``: no pickle, so a
checkpoint loads with ``weights_only=True``) and the observation in hand, so a resumed run
produces the same metrics rows as one that was never interrupted (timing columns aside).
Native pools (envpool, ale-py's vector env, subprocess vector envs) cannot be saved: on
resume they are rebuilt with a seed derived from the base seed and the iteration, and every
other piece of state (model, optimizer, schedule, counters, random generators, recent
returns) is restored. A resume that finds no checkpoint starts over from iteration 0 and
drops the earlier attempt's metrics rows and TensorBoard events.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import envs
from agents import (
    PPOConfig,
    build_actor_critic,
    learning_rate_at,
    make_optimizer,
    ppo_update,
    set_learning_rate,
)
from rl.envstate import EnvStateError, restore_env_state, saved_env_state
from rl.gae import compute_gae
from rl.gns_ppo import PPONoiseScale, check_settings
from rl.rollout import RolloutBuffer, collect, to_device
from rl.storage import RunDir, RunDirError, log_scalars

TIMING_COLUMNS = ("wall_time_s", "sps", "rollout_s", "update_s")

CHECKPOINT_KEYS = ("model", "optimizer", "sample_gen", "perm_gen", "torch_rng", "agent_steps",
                   "episodes_total", "recent_returns")
"""Keys every trainer checkpoint's state holds (a resume refuses one without them)."""


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
    """CUDA only: torch.compile the network."""
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
    """Run directory (default runs/<env>-<num_envs>x<num_steps>-seed<seed>)."""
    resume: bool = False
    """Continue the run in run_dir from its newest checkpoint."""
    checkpoint_every: int = 10
    """Checkpoint every this many PPO iterations (a crash loses at most this many)."""
    target_return: float | None = None
    """Stop once the mean return over the last return_window games reaches this."""
    return_window: int = 20
    """Games in the smoothed episodic return (metrics column return_recent)."""
    gns_every: int = 10
    """Measure the gradient noise scale every this many PPO iterations (0: never; <= 5% time)."""
    gns_groups: int = 8
    """Noise scale: K rollout groups, by environment if num_envs % K == 0, else by time."""
    gns_preconditioned: bool = False
    """Noise scale of Adam-preconditioned gradients (g / (sqrt(v_hat) + eps))."""

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
        resolve_device(self.device)
        if isinstance(self.torch_threads, bool) or not isinstance(self.torch_threads, int) \
                or self.torch_threads < 0:
            raise ValueError(f"torch_threads must be >= 0 (0: torch's default), "
                             f"got {self.torch_threads!r}")
        check_settings(self.gns_every, self.gns_groups, self.num_envs, self.num_steps)


# Keys of the resolved config that a resumed run may change.
RESUMABLE_CHANGES = ("train.total_agent_steps", "train.resume", "train.device",
                     "train.checkpoint_every", "train.run_dir", "train.compile",
                     "train.gns_every", "train.gns_groups", "train.gns_preconditioned",
                     "train.cpu_bf16", "train.channels_last_memory", "train.torch_threads")

# Presets: reference settings per family (DESIGN.md for Atari; a fast CartPole setting).
PRESETS: dict[str, tuple[dict, dict]] = {
    "atari": (
        dict(num_envs=8, num_steps=128, total_agent_steps=10_000_000, network="nature"),
        {},  # PPOConfig defaults are the Atari reference settings
    ),
    "classic": (
        dict(num_envs=8, num_steps=32, total_agent_steps=100_000, network="mlp",
             checkpoint_every=25),
        dict(learning_rate=1e-3, num_epochs=20, num_minibatches=1, gamma=0.98,
             gae_lambda=0.8, clip_coef=0.2, clip_value_loss=False, ent_coef=0.0),
    ),
}


def preset_for(env_id: str) -> str:
    return "atari" if envs.resolve(env_id).kind == "atari" else "classic"


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


@dataclass(frozen=True)
class PPOOverride:
    """PPO hyperparameters set from outside a run, in force from this (re)start of it on.

    Population based training (``rl.pbt``) continues a member from a checkpoint (its own,
    or a better member's) with new values. ``train(cfg, ppo, override=...)`` loads the
    checkpoint as a plain resume does, then puts these values in force: the optimizer's
    learning rate is set from them right after its state is loaded, and every update and
    noise-scale measurement uses the new ``ent_coef`` and ``clip_coef``. config.json keeps
    the settings the run was started with (``ppo``), so a resume with an override is not
    a config change. Every metrics row of the process also records ``ent_coef``,
    ``clip_coef`` (``learning_rate``, the rate in force, is always there) and ``columns``.

    Learning rate: the value replaces ``PPOConfig.learning_rate``, the start of the
    schedule. With ``anneal_lr`` the rate in force at 0-based iteration t of T is
    ``learning_rate * (1 - t / T)`` (the schedule multiplies the override); without it,
    the value itself.
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


@dataclass
class TrainResult:
    run_dir: Path
    iterations: int
    agent_steps: int
    return_recent: float
    reached_target: bool


def _finite_params(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _explained_variance(values, returns, mask) -> float:
    keep = mask.bool()
    y, pred = returns[keep], values[keep]
    var_y = torch.var(y) if y.numel() > 1 else torch.tensor(float("nan"))
    return float("nan") if var_y == 0 else float(1 - torch.var(y - pred) / var_y)


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


def load_run_state(model, optimizer, state: Mapping[str, Any], path) -> None:
    """Load a checkpoint's model and optimizer state; RunDirError if they do not fit."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise RunDirError(
            f"the newest checkpoint in {path} does not fit this run's network or optimizer "
            f"({str(err).splitlines()[0]}); move it out of checkpoints/ to resume from an "
            "older one, or start a new run"
        ) from None


def restore_env(env, state: Mapping[str, Any], rebuild: Callable[[], Any]):
    """The env to continue with: ``env`` with the checkpoint's saved state written into it,
    or ``rebuild()`` (after closing ``env``) when the checkpoint holds none that fits."""
    saved = state.get("env_state")
    if saved is None and state.get("env") is not None:
        warnings.warn("the checkpoint holds its environment in the old pickled form, which is "
                      "never loaded (it could run code): the environments are rebuilt from a "
                      "derived seed and the resume is not exact", stacklevel=2)
    if saved is not None:
        try:
            return restore_env_state(env, saved)
        except EnvStateError as err:
            warnings.warn(f"the checkpoint's environment state does not fit this environment "
                          f"({err}); rebuilding it from a derived seed (the resume is not "
                          "exact)", stacklevel=2)
    env.close()
    return rebuild()


def train(
    cfg: TrainConfig,
    ppo: PPOConfig,
    *,
    on_iteration: Callable[[dict], None] | None = None,
    quiet: bool = True,
    override: PPOOverride | None = None,
) -> TrainResult:
    """Train PPO; everything is validated before any environment starts.

    ``override``: PPO hyperparameters in force instead of ``ppo``'s (see ``PPOOverride``).
    """
    cfg.validate()
    ppo.validate(cfg.rollout_batch_size)
    started_with = ppo  # what config.json records
    if override is not None:
        ppo = override.apply(ppo)
        ppo.validate(cfg.rollout_batch_size)
    device = resolve_device(cfg.device)
    # Environment and network first: a name, backend or network that cannot work fails
    # here, before a run directory exists.
    env = envs.make_vec(cfg.env, cfg.num_envs, cfg.seed, backend=cfg.backend,
                        preset=cfg.env_preset)
    try:
        torch.manual_seed(cfg.seed)
        model = build_actor_critic(env.single_observation_space, env.single_action_space,
                                   cfg.network).to(device)
        config = {"train": dataclasses.asdict(cfg), "ppo": dataclasses.asdict(started_with)}
        run = RunDir.open(cfg.resolved_run_dir(), config, resume=cfg.resume,
                          may_differ=RESUMABLE_CHANGES)
    except BaseException:
        env.close()
        raise
    threads = torch.get_num_threads()
    try:
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        return _train(cfg, ppo, run, device, env, model, on_iteration, quiet, override)
    except BaseException as exc:
        run.mark_failed(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if cfg.torch_threads:
            torch.set_num_threads(threads)
        run.close()


def _train(cfg, ppo, run: RunDir, device, env, model, on_iteration, quiet,
           override=None) -> TrainResult:
    batch_size = cfg.rollout_batch_size
    total_iterations = cfg.total_agent_steps // batch_size
    optimizer = make_optimizer(model, ppo)
    gns = PPONoiseScale.from_config(cfg)
    sample_gen = torch.Generator(device=device).manual_seed(cfg.seed)
    perm_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    recent = deque(maxlen=cfg.return_window)
    iteration = agent_steps = episodes_total = 0
    next_obs = None
    extra = {} if override is None else {"ent_coef": ppo.ent_coef, "clip_coef": ppo.clip_coef,
                                         **override.columns}

    checkpoint = run.load_latest_checkpoint(map_location=device, required=CHECKPOINT_KEYS) \
        if cfg.resume else None
    if cfg.resume and checkpoint is None:
        run.restart()  # killed before its first checkpoint: start over, drop its rows
    if checkpoint is not None:
        state, iteration = checkpoint
        load_run_state(model, optimizer, state, run.path)
        if override is not None:  # the loaded state holds the old rate: the override's now
            set_learning_rate(optimizer, learning_rate_at(ppo, iteration, total_iterations))
        sample_gen.set_state(state["sample_gen"])
        perm_gen.set_state(state["perm_gen"])
        torch.set_rng_state(state["torch_rng"])
        agent_steps, episodes_total = state["agent_steps"], state["episodes_total"]
        recent.extend(state["recent_returns"])
        gns.load_state_dict(state.get("gns"))
        run.truncate_metrics(after_iteration=iteration)
        fresh = env
        env = restore_env(env, state, lambda: envs.make_vec(
            cfg.env, cfg.num_envs, (cfg.seed + 7919 * iteration) % 2**30,
            backend=cfg.backend, preset=cfg.env_preset))
        if env is fresh:
            next_obs = state["next_obs"].to(device)
    if next_obs is None:
        obs, _ = env.reset()
        next_obs = to_device(obs, device)

    run.mark_running(iteration, agent_steps, f"device={device}")
    writer = run.tensorboard_writer(purge_step=agent_steps + 1 if checkpoint else None)
    if uses_channels_last(cfg, device):
        model.to(memory_format=torch.channels_last)  # 4-D weights only; same parameters
    net = torch.compile(model) if cfg.compile and device.type == "cuda" else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and
                              device.type == "cuda")
    if cfg.cpu_bf16 and device.type == "cpu":
        model.register_forward_hook(_outputs_to_fp32)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16)
    buffer = RolloutBuffer(cfg.num_steps, cfg.num_envs, next_obs, device)
    frames_per_step = env.frames_per_step
    start_time = time.perf_counter()
    reached = bool(recent) and cfg.target_return is not None and \
        np.mean(recent) >= cfg.target_return and len(recent) == cfg.return_window

    progress = _Progress(total_iterations * batch_size, agent_steps, quiet)
    try:
        while iteration < total_iterations and not reached:
            lr = learning_rate_at(ppo, iteration, total_iterations)
            set_learning_rate(optimizer, lr)
            t0 = time.perf_counter()
            with autocast:
                next_obs, next_value, episodes = collect(env, net, buffer, next_obs,
                                                         sample_gen, device)
            t1 = time.perf_counter()
            adv, returns, mask = compute_gae(
                buffer.rewards, buffer.values, next_value, buffer.terminated,
                buffer.truncated, buffer.autoreset, ppo.gamma, ppo.gae_lambda)
            batch = {
                "obs": buffer.obs.flatten(0, 1),
                "actions": buffer.actions.flatten(),
                "logprobs": buffer.logprobs.flatten(),
                "values": buffer.values.flatten(),
                "advantages": adv.flatten(),
                "returns": returns.flatten(),
                "mask": mask.flatten(),
            }
            gns_row = gns.maybe_measure(iteration, model, optimizer, ppo, buffer, adv, returns,
                                        mask)
            with autocast:
                stats = ppo_update(net, optimizer, batch, ppo, perm_gen)
            t2 = time.perf_counter()
            losses = [stats[k] for k in ("policy_loss", "value_loss", "entropy")]
            if not all(math.isfinite(x) for x in losses) or not _finite_params(model):
                raise NonFiniteLossError(non_finite_advice(iteration + 1, losses, run.path,
                                                           run.list_checkpoints()))
            iteration += 1
            agent_steps += batch_size
            episodes_total += len(episodes.returns)
            recent.extend(episodes.returns)
            row = {
                "iteration": iteration,
                "agent_steps": agent_steps,
                "frames": agent_steps * frames_per_step,
                "rollout_batch_size": batch_size,
                "learning_rate": lr,
                "episodes": len(episodes.returns),
                "episodes_total": episodes_total,
                "return_mean": float(np.mean(episodes.returns)) if episodes.returns else math.nan,
                "return_recent": float(np.mean(recent)) if recent else math.nan,
                "length_mean": float(np.mean(episodes.lengths)) if episodes.lengths else math.nan,
                "explained_variance": _explained_variance(
                    buffer.values.flatten(), returns.flatten(), mask.flatten()),
                "masked_fraction": float(1 - mask.mean()),
                **{k: stats[k] for k in ("policy_loss", "value_loss", "entropy", "approx_kl",
                                         "clip_fraction", "grad_norm")},
                "wall_time_s": time.perf_counter() - start_time,
                "sps": batch_size / (t2 - t0),
                "rollout_s": t1 - t0,
                "update_s": t2 - t1,
                **gns_row,
                **extra,
            }
            reached = (cfg.target_return is not None and len(recent) == cfg.return_window
                       and row["return_recent"] >= cfg.target_return)
            row["reached_target"] = reached
            run.append_metrics(row)
            log_scalars(writer, row, agent_steps)
            if (iteration % cfg.checkpoint_every == 0 or iteration == total_iterations
                    or reached):
                _save(run, cfg, model, optimizer, sample_gen, perm_gen, env, next_obs,
                      iteration, agent_steps, episodes_total, recent, gns=gns.state_dict())
                run.mark_running(iteration, agent_steps)
            progress.update(row)
            if on_iteration is not None:
                on_iteration(row)
    finally:
        progress.close()
        env.close()
    run.mark_finished(iteration, agent_steps,
                      "reached target" if reached else "budget spent")
    return TrainResult(run.path, iteration, agent_steps,
                       float(np.mean(recent)) if recent else math.nan, reached)


def _outputs_to_fp32(module, inputs, outputs):
    """Forward hook: network outputs in fp32, so log-softmax and the losses run in fp32."""
    return tuple(out.float() for out in outputs)


def _save(run, cfg, model, optimizer, sample_gen, perm_gen, env, next_obs, iteration,
          agent_steps, episodes_total, recent, gns=None) -> None:
    env_state = saved_env_state(env)
    run.save_checkpoint(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "sample_gen": sample_gen.get_state(),
            "perm_gen": perm_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "agent_steps": agent_steps,
            "episodes_total": episodes_total,
            "recent_returns": list(recent),
            "env_state": env_state,
            "next_obs": next_obs.cpu() if env_state is not None else None,
            "gns": gns,
        },
        iteration,
    )


class _Progress:
    """A rich progress bar with SPS and recent return; nothing when quiet."""

    def __init__(self, total_steps: int, done_steps: int, quiet: bool):
        self.bar = None
        if quiet:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("[bold]train"), BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,} agent steps"),
            TextColumn("{task.fields[sps]} SPS"), TextColumn("return {task.fields[ret]}"),
            TimeRemainingColumn(),
        )
        self.task = self.bar.add_task("train", total=total_steps, completed=done_steps,
                                      sps="-", ret="-")
        self.bar.start()

    def update(self, row: dict) -> None:
        if self.bar is not None:
            ret = row["return_recent"]
            self.bar.update(self.task, completed=row["agent_steps"], sps=f"{row['sps']:,.0f}",
                            ret="-" if ret != ret else f"{ret:.1f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
