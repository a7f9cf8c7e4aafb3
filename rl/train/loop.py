"""The PPO iteration loop: collect -> GAE -> noise scale -> update -> row -> checkpoint.

One iteration collects a rollout of B = ranks x num_envs x num_steps agent steps, computes
advantages, measures the gradient noise scale at the parameters that collected it, runs
the update epochs, writes one metrics row and, every ``checkpoint_every`` iterations, a
checkpoint. Its typed extension points (``rl.train.protocols``): ``schedule`` (fixed or
adaptive batch, the learning rate), ``noise`` (the grouped or the data-parallel noise-scale
estimator), ``comm`` (the ranks' collectives), and ``hooks`` (``rl.train.hooks``). They
return columns; the loop alone writes the row. ``rl.train.launch`` builds a ``Loop``; see
docs/training-loop.md.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from agents import PPOConfig, ppo_update, set_learning_rate
from rl.runs.metrics import LOSS_COLUMNS, OBJECTIVE_TERMS, log_scalars
from rl.runs.storage import RunDir
from rl.train.comm import games_of_all_ranks, mean_over_ranks, rollout_stats, train_advantages
from rl.train.config import (
    NonFiniteLossError,
    TrainConfig,
    TrainResult,
    non_finite_advice,
    uses_channels_last,
)
from rl.train.gae import compute_gae
from rl.train.hooks import Hook
from rl.train.protocols import Comm, NoiseScale, Schedule
from rl.train.rollout import RolloutBuffer, collect, to_device
from rl.train.train_state import TrainState


@dataclass
class Loop:
    """One rank's training loop, ready to run (``state`` loaded, ``run`` open on rank 0)."""

    cfg: TrainConfig
    ppo: PPOConfig
    """The PPO settings in force (a PBT override already applied)."""
    state: TrainState
    device: torch.device
    schedule: Schedule
    """The rollout shape and learning rate along the run (``rl.train.batch_schedule``)."""
    noise: NoiseScale
    """The noise-scale estimator: grouped (one process) or data-parallel (free)."""
    comm: Comm
    """The ranks' collectives (``rl.train.comm``; one process: the identity)."""
    run: RunDir | None = None
    """The run directory (rank 0 only)."""
    hooks: list[Hook] = field(default_factory=list)
    columns: dict[str, Any] = field(default_factory=dict)
    """Values written into every row (a PBT override's)."""
    resumed: bool = False

    def run_loop(self) -> TrainResult:
        cfg, ppo, state, run, device = self.cfg, self.ppo, self.state, self.run, self.device
        comm = self.comm
        if state.next_obs is None:
            state.next_obs = to_device(state.env.reset()[0], device)
        if run is not None:
            run.mark_running(state.iteration, state.agent_steps, f"device={device}"
                             + (f", {comm.size} data-parallel ranks" if comm.size > 1 else ""))
        writer = None if run is None else run.tensorboard_writer(
            purge_step=state.agent_steps + 1 if self.resumed else None)
        net, autocast = prepare_network(cfg, state.model, device)
        buffer = RolloutBuffer(self.schedule.shape[1], self.schedule.shape[0], state.next_obs,
                               device)
        frames_per_step = state.env.frames_per_step
        start_time = time.perf_counter()
        reached = state.returns.reached(cfg.target_return)
        try:
            for hook in self.hooks:
                hook.on_start(self)
            while not reached and self.schedule.fits(state.iteration, state.agent_steps):
                batch_size = self.schedule.batch_size
                lr = self.schedule.learning_rate(ppo, state.iteration, state.agent_steps)
                set_learning_rate(state.optimizer, lr)
                # 1. Collect a rollout with the current policy.
                t0 = time.perf_counter()
                with autocast:
                    state.next_obs, next_value, episodes = collect(
                        state.env, net, buffer, state.next_obs, state.sample_gen, device)
                t1 = time.perf_counter()
                # 2. Advantages and returns.
                adv, returns, mask = compute_gae(
                    buffer.rewards, buffer.values, next_value, buffer.terminated,
                    buffer.truncated, buffer.autoreset, ppo.gamma, ppo.gae_lambda)
                train_adv, ppo_run = train_advantages(comm, adv, mask, ppo)
                # 3. The noise scale, at the parameters that collected the rollout.
                noise_columns, grad_hook = self.noise.before_update(
                    state.iteration, state.model, state.optimizer, ppo, buffer, adv, returns,
                    mask)
                for hook in self.hooks:
                    hook.before_update(self, {"buffer": buffer, "advantages": adv,
                                              "returns": returns, "mask": mask,
                                              "grad_hook": grad_hook})
                # 4. The PPO update epochs.
                with autocast:
                    stats = ppo_update(net, state.optimizer, {
                        "obs": buffer.obs.flatten(0, 1),
                        "actions": buffer.actions.flatten(0, 1),
                        "logprobs": buffer.logprobs.flatten(),
                        "values": buffer.values.flatten(),
                        "advantages": train_adv,
                        "returns": returns.flatten(),
                        "mask": mask.flatten(),
                    }, ppo_run, state.perm_gen, grad_hook=grad_hook)
                t2 = time.perf_counter()
                noise_columns.update(self.noise.after_update(grad_hook, buffer, ppo))
                stats = mean_over_ranks(comm, stats)
                self.check_finite(stats)
                # 5. Counters and the metrics row, assembled here from every part's columns.
                ep_returns, ep_lengths = games_of_all_ranks(comm, episodes)
                state.iteration += 1
                state.agent_steps += batch_size
                state.episodes_total += len(ep_returns)
                state.returns.extend(ep_returns)
                row = {
                    "iteration": state.iteration,
                    "agent_steps": state.agent_steps,
                    "frames": state.agent_steps * frames_per_step,
                    "rollout_batch_size": batch_size,
                    "learning_rate": lr,
                    "episodes": len(ep_returns),
                    "episodes_total": state.episodes_total,
                    "return_mean": _mean(ep_returns),
                    "return_recent": state.returns.mean,
                    "length_mean": _mean(ep_lengths),
                    **rollout_stats(comm, buffer, returns, mask),
                    **{k: stats[k] for k in LOSS_COLUMNS},
                    "wall_time_s": time.perf_counter() - start_time,
                    "sps": batch_size / (t2 - t0),
                    "rollout_s": t1 - t0,
                    "update_s": t2 - t1,
                    **noise_columns,
                    **self.columns,
                }
                reached = state.returns.reached(cfg.target_return)
                row["reached_target"] = reached
                for hook in self.hooks:  # each sees the row so far, read-only
                    row.update(hook.on_row(self, MappingProxyType(row)) or {})
                new_shape = self.schedule.observe(noise_columns, row, comm)
                row.update(self.schedule.columns())
                if run is not None:
                    run.append_metrics(row)
                    log_scalars(writer, row, state.agent_steps)
                if new_shape is not None:
                    state.next_obs, buffer = self.schedule.resize(state.env, state.next_obs,
                                                                  device)
                # 6. Checkpoint (after the row: a checkpoint is never ahead of the metrics).
                last = not self.schedule.fits(state.iteration, state.agent_steps)
                if state.iteration % cfg.checkpoint_every == 0 or last or reached:
                    state.save(run, comm, {"gns": self.noise.state_dict(),
                                           "schedule": self.schedule.state_dict()})
                    if run is not None:
                        run.mark_running(state.iteration, state.agent_steps)
                for hook in self.hooks:
                    hook.after_iteration(self, row)
        finally:
            for hook in self.hooks:
                hook.close()
            state.env.close()
        result = TrainResult(cfg.resolved_run_dir() if run is None else run.path,
                             state.iteration, state.agent_steps, state.returns.mean, reached)
        if run is not None:
            run.mark_finished(state.iteration, state.agent_steps,
                              "reached target" if reached else "budget spent")
        for hook in self.hooks:
            hook.on_end(self, result)
        return result

    def check_finite(self, stats: dict[str, float]) -> None:
        """Stop with ``NonFiniteLossError`` on a non-finite loss or parameter."""
        losses = [stats[k] for k in OBJECTIVE_TERMS]
        if not all(math.isfinite(x) for x in losses) or not finite_params(self.state.model):
            last = self.run.list_checkpoints() if self.run is not None else []
            raise NonFiniteLossError(non_finite_advice(
                self.state.iteration + 1, losses, self.cfg.resolved_run_dir(), last))


def prepare_network(cfg: TrainConfig, model: torch.nn.Module, device: torch.device):
    """(network to run, autocast context) for the run's memory format, compile and bf16; the
    network to run is ``model`` itself, changed in place."""
    if uses_channels_last(cfg, device):
        model.to(memory_format=torch.channels_last)  # 4-D weights only; same parameters
    if cfg.compile:
        # In place: rollouts and updates call the network through act/evaluate, which go
        # through Module.__call__; a torch.compile(model) wrapper compiles only direct calls.
        # The noise scale differentiates the policy and value terms of one forward pass
        # separately (retain_graph), which compiled backward graphs refuse while they donate
        # their buffers.
        torch._functorch.config.donated_buffer = False
        model.compile()
    # No weight-cast cache: the update's optimizer steps run inside the context, and a cached
    # bf16 copy of a weight would keep serving the pre-step value (every minibatch of the
    # update would then see the rollout's weights: PPO ratio 1, approx_kl 0).
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and
                              device.type == "cuda", cache_enabled=False)
    if cfg.cpu_bf16 and device.type == "cpu":
        model.register_forward_hook(outputs_to_fp32)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False)
    return model, autocast


def outputs_to_fp32(module, inputs, outputs):
    """Forward hook: network outputs in fp32, so log-softmax and the losses run in fp32."""
    return tuple(out.float() for out in outputs)


def finite_params(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _mean(values: list) -> float:
    return float(np.mean(values)) if values else math.nan
