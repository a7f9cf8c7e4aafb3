"""Data-parallel PPO over torch.distributed, the noise scale it gives for free, and the loop
that also runs the adaptive batch schedule (``rl.adaptive``).

Running
-------
``rlscale train --nproc N ...`` spawns N processes on this machine (gloo on CPU, NCCL on
CUDA, one GPU per process: ``cuda:<local rank>``). ``torchrun --nproc-per-node N -m rl.cli
train ...`` works as well (also across nodes): the ranks are then read from torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and ``--nproc`` may be
left out. ``train_parallel(cfg, ppo, ParallelConfig(nproc=N), AdaptiveConfig(...))`` is the
library entry.

What each rank does
-------------------
* Rank r runs its own ``num_envs`` environments (env i of rank r is seeded
  seed + r num_envs + i, so the N ranks hold the same environments as one process with
  N x num_envs) and its own rollout, action sampling (seed + 1000003 r) and minibatch order.
* The rollout batch is global: B = N x num_envs x num_steps agent steps per iteration, and
  ``total_agent_steps`` and every metrics count are summed over ranks.
* Gradients are averaged over ranks after every backward pass, before gradient clipping and
  the optimizer step (a ``grad_hook`` of ``agents.ppo.ppo_update``: one all-reduce of the
  flattened gradient per minibatch). Parameters start equal (same init seed, then a broadcast
  from rank 0) and take identical steps, so the model and the Adam state stay identical on
  every rank; every iteration the ranks compare a SHA-1 of their parameters
  (``dp/params_in_sync``) and stop with an error if they ever differ.
* Advantages are normalized once per iteration with the mean and std of the whole global
  rollout (two all-reduces) instead of per minibatch: that is the normalization the
  noise-scale definition uses (DESIGN.md), and with ``num_minibatches = 1`` it is exactly
  what one process does with the union batch (with ``--no-norm-adv`` advantages stay raw,
  in training and in the estimate). ``target_kl`` early stopping is not supported with
  N > 1 (each rank would stop on its own KL).

The noise scale for free
------------------------
On a measured iteration (0-based i with i % gns_every == 0), at the first minibatch of the
first epoch -- before any optimizer step, so at the parameters that collected the rollout,
where the clipped objective's gradient is the plain policy-gradient one -- rank r's
gradient g_r of the training loss on its minibatch is the small batch
(b = num_envs x num_steps / num_minibatches rollout slots) and the all-reduced mean gradient
is the big batch (B = N b):

    |G_b|^2 = mean_r |g_r|^2      (one extra all-reduce of a few scalars)
    |G_B|^2 = |mean_r g_r|^2      (the gradient that is all-reduced for training anyway)

and ``rl.gns.two_batch_estimate`` gives g2 and tr(Sigma). No extra backward pass. With
``num_minibatches = 1`` this is exactly the grouped estimator of ``rl.gns_ppo`` on the union
rollout split by environment into K = N groups (the ranks' environments), with whole-rollout
advantage normalization (tested: equal up to float rounding). With more minibatches the
groups are each rank's first minibatch, a random subset of its slots (b is then the
minibatch size; columns ``gns/split_envs`` = 0).

Terms: the backward pass is of the total loss, so ``gns/total/*`` is always measured. When
the actor and critic have separate parameters (the MLP networks) and ``ent_coef`` = 0, the
total gradient's actor part is the policy-loss gradient and its critic part is vf_coef x the
value-loss gradient: those parts give ``gns/policy/*`` and ``gns/value/*`` exactly (the value
part's squared norms divided by vf_coef^2). With a shared trunk only the total is reported.
The columns are those of ``rl.gns_ppo`` (same trackers and checkpointed smoothing), plus
``gns/data_parallel`` = 1. ``--gns-preconditioned`` divides every gradient by Adam's
sqrt(v_hat) + eps as there.

Metrics and run directory
-------------------------
Rank 0 alone writes the run directory (config.json gains a ``parallel`` section). Rows are
those of ``rl.trainer`` aggregated over ranks: episodes and returns of every rank's games
(``return_recent`` over the last games of all ranks, identical on every rank so that all
stop together), losses and KL averaged over ranks, explained variance and masked fraction
over the whole rollout; plus ``world_size``, ``num_envs`` and ``num_steps`` (per rank) and
``dp/params_in_sync``. Timing columns are rank 0's.

Checkpoints hold the (identical) model and optimizer once, and every rank's own state
(generators, torch RNG, its environments' state as arrays (``rl.envstate``) with the
observation in hand where the backend allows, else nothing: the environments are then
rebuilt from a derived seed).
Rank 0 loads a checkpoint and sends each rank its part, so resuming needs no shared storage;
``--resume`` needs the same number of processes (config.json says how many). With one
process the checkpoint is also a plain ``rl.trainer`` checkpoint.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import math
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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
from rl import trainer as trainer_module
from rl.adaptive import AdaptiveConfig, BatchSchedule, EnvChunks, plot_schedule
from rl.envstate import EnvStateError, env_state, saved_env_state
from rl.gae import compute_gae
from rl.gns import GNSSample, GNSTracker, adam_preconditioner, two_batch_estimate
from rl.gns_ppo import PPONoiseScale, adam_has_state, tracker_columns
from rl.rollout import RolloutBuffer, collect, to_device
from rl.storage import RunDir, load_metrics, log_scalars
from rl.trainer import (
    CHECKPOINT_KEYS,
    RESUMABLE_CHANGES,
    NonFiniteLossError,
    TrainConfig,
    TrainResult,
    _explained_variance,
    _finite_params,
    _Progress,
    load_run_state,
    non_finite_advice,
    resolve_device,
    restore_env,
    uses_channels_last,
)

__all__ = [
    "FreeNoiseScale",
    "GradSync",
    "ParallelConfig",
    "torchrun_env",
    "train_parallel",
]

RANK_SEED_STRIDE = 1_000_003
"""Rank r samples actions and minibatch orders from seed + RANK_SEED_STRIDE r."""


@dataclass
class ParallelConfig:
    """Data-parallel training (rl/distributed.py)."""

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


def torchrun_env() -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) when started by torchrun (its environment), else None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return rank, world, int(os.environ.get("LOCAL_RANK", rank))


# ---------------------------------------------------------------------------------------------
# Collectives (one process: no-ops)
# ---------------------------------------------------------------------------------------------


class _Comm:
    """The collectives the loop uses; this one is a single process (world size 1)."""

    rank, size = 0, 1

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def all_gather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def gather_object(self, obj: Any) -> list[Any] | None:
        return [obj]

    def broadcast_object(self, obj: Any) -> Any:
        return obj

    def scatter_object(self, objs: Sequence[Any] | None) -> Any:
        return objs[0]

    def broadcast_params(self, model: torch.nn.Module) -> None:
        pass

    def barrier(self) -> None:
        pass


class _DistComm(_Comm):
    """torch.distributed collectives over the default process group."""

    def __init__(self, device: torch.device):
        import torch.distributed as dist

        self.dist = dist
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.device = device

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        self.dist.all_reduce(t)
        return t

    def all_gather_object(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.size
        self.dist.all_gather_object(out, obj)
        return out

    def gather_object(self, obj: Any) -> list[Any] | None:
        out: list[Any] | None = [None] * self.size if self.rank == 0 else None
        self.dist.gather_object(obj, out, dst=0)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def scatter_object(self, objs: Sequence[Any] | None) -> Any:
        box: list[Any] = [None]
        self.dist.scatter_object_list(box, list(objs) if self.rank == 0 else None, src=0)
        return box[0]

    def broadcast_params(self, model: torch.nn.Module) -> None:
        with torch.no_grad():
            for t in [*model.parameters(), *model.buffers()]:
                self.dist.broadcast(t.data, src=0)

    def barrier(self) -> None:
        if self.device.type == "cuda" and self.dist.get_backend() == "nccl":
            self.dist.barrier(device_ids=[self.device.index])
        else:
            self.dist.barrier()


# ---------------------------------------------------------------------------------------------
# Gradient averaging and the free noise-scale estimate
# ---------------------------------------------------------------------------------------------


def _param_parts(model: torch.nn.Module, ppo: PPOConfig) -> tuple[list[str], tuple[str, ...]]:
    """Per trainable parameter: "policy", "value" or "shared"; and the terms measurable."""
    parts = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        top = name.split(".", 1)[0]
        parts.append("policy" if top in ("actor_trunk", "policy_head")
                     else "value" if top in ("critic_trunk", "value_head") else "shared")
    separate = ("shared" not in parts and "policy" in parts and "value" in parts
                and getattr(model, "shared_trunk", True) is False)
    terms = ("total", "policy", "value") if separate and ppo.ent_coef == 0 and ppo.vf_coef > 0 \
        else ("total",)
    return parts, terms


class GradSync:
    """``grad_hook`` for ``ppo_update``: averages the gradients over ranks.

    With ``measure`` set, its first call (the first minibatch of the iteration) also keeps,
    per parameter part, the mean over ranks of |g_r|^2 and |mean_r g_r|^2 (float64), in
    ``self.small`` and ``self.big``; ``divisors`` (Adam's sqrt(v_hat) + eps per parameter)
    precondition those norms, not the training gradient.
    """

    def __init__(self, comm: _Comm, parts: Sequence[str], measure: bool = False,
                 divisors: Sequence[torch.Tensor] | None = None):
        self.comm, self.parts, self.measure, self.divisors = comm, list(parts), measure, divisors
        self.names = sorted(set(self.parts))
        self.calls = 0
        self.small: dict[str, float] | None = None
        self.big: dict[str, float] | None = None
        self.seconds = 0.0

    def _sq_norms(self, grads: Sequence[torch.Tensor]) -> torch.Tensor:
        sums = [torch.zeros((), dtype=torch.float64, device=grads[0].device) for _ in self.names]
        for j, (g, part) in enumerate(zip(grads, self.parts, strict=True)):
            g = g.detach().to(torch.float64)
            if self.divisors is not None:
                g = g / self.divisors[j]
            sums[self.names.index(part)] += g.square().sum()
        return torch.stack(sums)

    def __call__(self, params: list[torch.Tensor]) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        measuring = self.measure and self.calls == 0
        if measuring:
            start = time.perf_counter()
            local = self._sq_norms(grads)
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.comm.all_reduce_sum(flat)
        flat /= self.comm.size
        offset = 0
        for p in params:
            n = p.numel()
            view = flat[offset:offset + n].view_as(p)
            if p.grad is None:
                p.grad = view.clone()
            else:
                p.grad.copy_(view)
            offset += n
        if measuring:
            small = self.comm.all_reduce_sum(local) / self.comm.size
            big = self._sq_norms([p.grad for p in params])
            self.small = dict(zip(self.names, small.tolist(), strict=True))
            self.big = dict(zip(self.names, big.tolist(), strict=True))
            self.seconds = time.perf_counter() - start
        self.calls += 1


class FreeNoiseScale:
    """The data-parallel noise-scale estimate: cadence, trackers (one per term), metrics.

    See the module docstring for the definition. ``terms`` are the loss terms measurable
    for the model (``total``, and ``policy``/``value`` for separate actor and critic).
    """

    def __init__(self, every: int, terms: Sequence[str], preconditioned: bool = False, *,
                 vf_coef: float = 0.5, beta: float = 0.99, window: int = 100):
        self.every = every
        self.terms = tuple(terms)
        self.preconditioned = bool(preconditioned)
        self.vf_coef = vf_coef
        self.trackers = {t: GNSTracker(beta=beta, window=window) for t in self.terms}

    def due(self, iteration: int) -> bool:
        return self.every > 0 and iteration % self.every == 0

    def hook(self, comm: _Comm, parts: Sequence[str], iteration: int,
             optimizer) -> tuple[GradSync, bool]:
        """The iteration's GradSync, and whether the measurement was skipped (no Adam state)."""
        if not self.due(iteration):
            return GradSync(comm, parts), False
        divisors = None
        if self.preconditioned:
            if not adam_has_state(optimizer):
                return GradSync(comm, parts), True
            params = [p for g in optimizer.param_groups for p in g["params"]]
            divisors = adam_preconditioner(optimizer).divisors(params)
        return GradSync(comm, parts, measure=True, divisors=divisors), False

    def samples(self, sync: GradSync, small_batch_size: int, world: int) -> dict[str, GNSSample]:
        small, big = sync.small, sync.big
        sums = {"total": (sum(small.values()), sum(big.values()))}
        if "policy" in self.terms:
            sums["policy"] = (small["policy"], big["policy"])
            c = self.vf_coef ** 2
            sums["value"] = (small["value"] / c, big["value"] / c)
        out = {}
        for term in self.terms:
            s, b = sums[term]
            g2, trace = two_batch_estimate(small_batch_size, s, world * small_batch_size, b)
            out[term] = GNSSample(g2=float(g2), trace_sigma=float(trace),
                                  small_batch_size=small_batch_size,
                                  big_batch_size=world * small_batch_size, small_sq_norm=s,
                                  big_sq_norm=b, num_groups=world,
                                  preconditioned=sync.divisors is not None)
        return out

    def record(self, sync: GradSync, small_batch_size: int, world: int, whole_envs: bool,
               seconds: float) -> dict[str, float]:
        row = tracker_columns(self.trackers, self.samples(sync, small_batch_size, world))
        row.update({
            "gns/small_batch_size": small_batch_size,
            "gns/big_batch_size": world * small_batch_size,
            "gns/groups": world,
            "gns/split_envs": int(whole_envs),
            "gns/preconditioned": int(sync.divisors is not None),
            "gns/data_parallel": 1,
            "gns/seconds": seconds,
        })
        return row

    def state_dict(self) -> dict[str, Any]:
        return {"free": True, "terms": list(self.terms), "preconditioned": self.preconditioned,
                "trackers": {t: tr.state_dict() for t, tr in self.trackers.items()}}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if not state or not state.get("free") or state["preconditioned"] != self.preconditioned:
            return
        for term, tracker in self.trackers.items():
            if term in state["trackers"]:
                tracker.load_state_dict(state["trackers"][term])


def _global_normalize(comm: _Comm, adv: torch.Tensor, mask: torch.Tensor,
                      eps: float = 1e-8) -> torch.Tensor:
    """``agents.ppo.normalize_advantages`` with the masked mean and std of all ranks' slots."""
    keep = mask > 0
    w = mask.to(torch.float64)
    a = torch.where(keep, adv, torch.zeros_like(adv)).to(torch.float64)
    sums = comm.all_reduce_sum(torch.stack([w.sum(), (a * w).sum()]))
    n = sums[0]
    mean = sums[1] / n.clamp_min(1e-8)
    centred = torch.where(keep, a - mean, torch.zeros_like(a))
    sq = comm.all_reduce_sum((centred.square() * w).sum().reshape(1))[0]
    var = sq / (n - 1.0).clamp_min(1.0)
    out = torch.where(keep, centred / (var.sqrt() + eps), torch.zeros_like(a))
    return out.to(adv.dtype)


def _params_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha1()
    for t in model.state_dict().values():
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Launching
# ---------------------------------------------------------------------------------------------


class _PeerFailed(RuntimeError):
    """Another rank failed first; its error is the one to report."""


def train_parallel(
    cfg: TrainConfig,
    ppo: PPOConfig,
    parallel: ParallelConfig | None = None,
    adaptive: AdaptiveConfig | None = None,
    *,
    quiet: bool = True,
    on_iteration: Callable[[dict], None] | None = None,
    debug_dump_dir: str | os.PathLike[str] | None = None,
) -> TrainResult | None:
    """Train PPO data-parallel and/or with the adaptive batch schedule.

    Under torchrun the calling process is one rank (the ranks come from the environment);
    otherwise ``parallel.nproc`` > 1 spawns that many processes and waits for them, and
    ``nproc`` = 1 runs here (the adaptive schedule alone). Returns the run's result; None on
    ranks other than 0 under torchrun. ``on_iteration`` (rank 0's rows) needs nproc = 1 or
    torchrun. ``debug_dump_dir``: each rank saves, at every measured iteration, its rollout,
    the parameters before and after the update and its metrics row there (for tests).
    """
    parallel = parallel or ParallelConfig()
    adaptive = adaptive or AdaptiveConfig()
    parallel.validate()
    launched = torchrun_env()
    if launched is not None and parallel.nproc not in (1, launched[1]):
        raise ValueError(f"--nproc {parallel.nproc} but torchrun started {launched[1]} "
                         "processes; leave --nproc out under torchrun")
    world = launched[1] if launched is not None else parallel.nproc
    parallel = dataclasses.replace(parallel, nproc=world)
    cfg = _checked(cfg, ppo, parallel, adaptive)
    args = (cfg, ppo, parallel, adaptive, quiet, on_iteration,
            None if debug_dump_dir is None else str(debug_dump_dir))
    if launched is not None:
        import torch.distributed as dist

        rank, _, local_rank = launched
        device = _rank_device(cfg, local_rank)
        own = world > 1 and not dist.is_initialized()
        if own:
            dist.init_process_group(_backend(parallel, device), timeout=_TIMEOUT)
        try:
            result = _run_rank(rank, world, local_rank, *args)
        finally:
            if own:
                dist.destroy_process_group()
        return result if rank == 0 else None
    if world == 1:
        return _run_rank(0, 1, 0, *args)
    if on_iteration is not None:
        raise ValueError("on_iteration is not available with spawned processes (nproc > 1); "
                         "read the run's metrics.jsonl instead")
    _spawn(world, args)
    return _result_from(cfg.resolved_run_dir())


_TIMEOUT = datetime.timedelta(minutes=10)


def _checked(cfg: TrainConfig, ppo: PPOConfig, parallel: ParallelConfig,
             adaptive: AdaptiveConfig) -> TrainConfig:
    """Validate everything before a process or environment starts; fill the default run dir."""
    cfg.validate()
    ppo.validate(cfg.rollout_batch_size)
    adaptive.validate(cfg.gns_every)
    world = parallel.nproc
    if cfg.total_agent_steps < world * cfg.rollout_batch_size:
        raise ValueError(
            f"total_agent_steps={cfg.total_agent_steps} is less than one rollout of {world} "
            f"ranks x {cfg.num_envs} envs x {cfg.num_steps} steps; raise --total-agent-steps"
        )
    if world > 1 and ppo.target_kl is not None:
        raise ValueError("target_kl early stopping is not supported with --nproc > 1 (each "
                         "rank would stop on its own KL); use --target-kl none")
    if adaptive.adaptive:
        BatchSchedule(adaptive, cfg.num_envs, cfg.num_steps, world)  # checks the bounds
    device = resolve_device(cfg.device)
    if world > 1 and parallel.dist_backend == "nccl" and device.type != "cuda":
        raise ValueError("dist_backend nccl needs CUDA; use --dist-backend gloo on CPU")
    if world > 1 and device.type == "cuda" and torchrun_env() is None \
            and torch.cuda.device_count() < world:
        raise ValueError(f"--nproc {world} on CUDA needs {world} GPUs, this machine has "
                         f"{torch.cuda.device_count()}; use fewer processes or --device cpu")
    if cfg.run_dir is None and (world > 1 or adaptive.adaptive):
        base = cfg.resolved_run_dir()
        suffix = (f"-dp{world}" if world > 1 else "") + ("-adaptive" if adaptive.adaptive else "")
        cfg = dataclasses.replace(cfg, run_dir=str(base.with_name(base.name + suffix)))
    return cfg


def _backend(parallel: ParallelConfig, device: torch.device) -> str:
    if parallel.dist_backend != "auto":
        return parallel.dist_backend
    return "nccl" if device.type == "cuda" else "gloo"


def _rank_device(cfg: TrainConfig, local_rank: int) -> torch.device:
    device = resolve_device(cfg.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(world: int, args: tuple) -> None:
    import torch.multiprocessing as tmp

    ctx = tmp.get_context("spawn")
    errors = ctx.SimpleQueue()
    threads = max(1, (os.cpu_count() or 1) // world)
    port = _free_port()
    try:
        tmp.start_processes(_worker, args=(world, port, threads, errors, args), nprocs=world,
                            join=True, start_method="spawn")
    except (tmp.ProcessRaisedException, tmp.ProcessExitedException) as exc:
        reports = []
        while not errors.empty():
            reports.append(errors.get())
        reports.sort(key=lambda r: (r[1] == "_PeerFailed", r[0]))
        if not reports:
            raise RuntimeError(f"a data-parallel worker died: {exc}") from None
        rank, kind, message, is_value_error = reports[0]
        error_type = ValueError if is_value_error else RuntimeError
        raise error_type(f"{message} (rank {rank}, {kind})") from None


def _worker(rank: int, world: int, port: int, threads: int, errors, args: tuple) -> None:
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(threads)
    cfg, parallel = args[0], args[2]
    try:
        device = _rank_device(cfg, rank)
        dist.init_process_group(_backend(parallel, device), rank=rank, world_size=world,
                                timeout=_TIMEOUT)
        try:
            _run_rank(rank, world, rank, *args)
        finally:
            dist.destroy_process_group()
    except BaseException as exc:
        errors.put((rank, type(exc).__name__, str(exc), isinstance(exc, ValueError)))
        raise


def _result_from(run_dir: Path) -> TrainResult:
    m = load_metrics(run_dir)
    if m.empty:
        return TrainResult(run_dir, 0, 0, math.nan, False)
    last = m.iloc[-1]
    return TrainResult(run_dir, int(last["iteration"]), int(last["agent_steps"]),
                       float(last["return_recent"]), bool(last.get("reached_target", False)))


def _env_seed(cfg: TrainConfig, iteration: int, rank: int, num_envs: int) -> int:
    """Rank r's base seed: seed + r num_envs at the start; derived from the iteration after."""
    base = cfg.seed if iteration == 0 else (cfg.seed + 7919 * iteration) % 2**30
    return base + rank * num_envs


def _make_env(cfg: TrainConfig, num_envs: int, seed: int):
    return envs.make_vec(cfg.env, num_envs, seed, backend=cfg.backend, preset=cfg.env_preset)


def _run_rank(rank: int, world: int, local_rank: int, cfg: TrainConfig, ppo: PPOConfig,
              parallel: ParallelConfig, adaptive: AdaptiveConfig, quiet: bool,
              on_iteration, dump_dir: str | None) -> TrainResult:
    device = _rank_device(cfg, local_rank)
    comm = _DistComm(device) if world > 1 else _Comm()
    env = _make_env(cfg, cfg.num_envs, _env_seed(cfg, 0, rank, cfg.num_envs))
    run = None
    try:
        torch.manual_seed(cfg.seed)
        model = build_actor_critic(env.single_observation_space, env.single_action_space,
                                   cfg.network).to(device)
        comm.broadcast_params(model)
        config = {"train": dataclasses.asdict(cfg), "ppo": dataclasses.asdict(ppo)}
        if world > 1:
            config["parallel"] = dataclasses.asdict(parallel)
        if adaptive.adaptive:
            config["adaptive"] = dataclasses.asdict(adaptive)
        checkpoint, failure = None, None
        if rank == 0:
            try:
                run = RunDir.open(cfg.resolved_run_dir(), config, resume=cfg.resume,
                                  may_differ=RESUMABLE_CHANGES)
                checkpoint = run.load_latest_checkpoint(
                    map_location="cpu", required=CHECKPOINT_KEYS) if cfg.resume else None
                if cfg.resume and checkpoint is None:
                    run.restart()  # nothing to continue from: start over, drop old rows
            except Exception as exc:
                failure = exc
        message = comm.broadcast_object(None if failure is None else str(failure))
        if failure is not None:
            raise failure
        if message is not None:
            raise _PeerFailed(f"rank 0 could not open the run directory: {message}")
        resume = _distribute_checkpoint(comm, checkpoint)
    except BaseException:
        env.close()
        if run is not None:
            run.close()
        raise
    loop = _Loop(cfg, ppo, adaptive, comm, run, device, env, model, quiet, on_iteration,
                 dump_dir)
    threads, wanted = torch.get_num_threads(), getattr(cfg, "torch_threads", 0)
    try:
        if wanted:
            torch.set_num_threads(wanted)
        result = loop.run(resume)
        # No rank leaves (and tears down its connections) while another still has messages
        # in flight: gloo can abort a process that exits mid-transfer.
        comm.barrier()
        return result
    except BaseException as exc:
        if run is not None:
            run.mark_failed(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if wanted:
            torch.set_num_threads(threads)
        if run is not None:
            run.close()


def _distribute_checkpoint(comm: _Comm, checkpoint) -> tuple[dict, dict, int] | None:
    """(common state, this rank's state, iteration) from rank 0's checkpoint, or None."""
    if comm.size == 1:
        if checkpoint is None:
            return None
        state, iteration = checkpoint
        return state, _rank_state(state, 0, 1), iteration
    head = None
    if comm.rank == 0 and checkpoint is not None:
        state, iteration = checkpoint
        head = ({k: v for k, v in state.items() if k != "rank_states"}, iteration)
    head = comm.broadcast_object(head)
    if head is None:
        return None
    common, iteration = head
    parts = None
    if comm.rank == 0:
        parts = [_rank_state(checkpoint[0], r, comm.size) for r in range(comm.size)]
    return common, comm.scatter_object(parts), iteration


def _env_state(env) -> dict | None:
    """The env's exact state where every part of it can be saved (``rl.trainer``'s rule)."""
    if isinstance(env, EnvChunks):
        if not all(getattr(chunk, "checkpointable", False) for chunk in env.chunks):
            return None
        try:
            return env_state(env)
        except EnvStateError:
            return None
    return saved_env_state(env)


def _saved_chunks(saved: dict | None) -> int:
    """How many chunks the saved state of an ``EnvChunks`` holds (0 if not one)."""
    try:
        return len(saved["root"]["attrs"]["chunks"]["items"])
    except (KeyError, TypeError):
        return 0


def _rank_state(state: dict, rank: int, world: int) -> dict:
    ranks = state.get("rank_states")
    if ranks is None:  # one process (also a plain rl.trainer checkpoint)
        if world != 1:
            raise ValueError("the checkpoint was written by a single-process run; resume it "
                             "with one process")
        return {k: state.get(k) for k in ("sample_gen", "perm_gen", "torch_rng", "env_state",
                                          "env", "next_obs")}
    if len(ranks) != world:
        raise ValueError(f"the checkpoint holds {len(ranks)} ranks, this run has {world}; "
                         "resume with the same --nproc")
    return ranks[rank]


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


class _Loop:
    """``rl.trainer``'s iteration (rollout -> GAE -> update -> row -> checkpoint) for one rank,
    with gradient averaging, aggregated rows and the batch schedule. With one rank and a fixed
    batch it produces the rows ``rl.trainer.train`` produces (tested)."""

    def __init__(self, cfg, ppo, adaptive, comm, run, device, env, model, quiet, on_iteration,
                 dump_dir):
        self.cfg, self.ppo, self.comm, self.run_dir = cfg, ppo, comm, run
        self.device, self.env, self.model = device, env, model
        self.quiet, self.on_iteration = quiet, on_iteration
        self.dump_dir = Path(dump_dir) if dump_dir else None
        self.world, self.rank = comm.size, comm.rank
        self.main = self.rank == 0
        self.shape = (cfg.num_envs, cfg.num_steps)
        self.schedule = BatchSchedule(adaptive, cfg.num_envs, cfg.num_steps, self.world) \
            if adaptive.adaptive else None
        self.chunked = self.schedule is not None and adaptive.batch_axis == "num_envs"
        if self.chunked:
            self.env = self._chunks(env, cfg.seed)
        self.parts, terms = _param_parts(model, ppo)
        self.grouped = PPONoiseScale.from_config(cfg) if self.world == 1 else None
        self.free = FreeNoiseScale(cfg.gns_every, terms, cfg.gns_preconditioned,
                                   vf_coef=ppo.vf_coef) if self.world > 1 else None
        if self.schedule is not None and self.world > 1 and adaptive.batch_term not in terms:
            raise ValueError(
                f"batch_term {adaptive.batch_term!r} is not measured by the data-parallel "
                f"estimate for this model/config (measured: {', '.join(terms)}); use "
                "--batch-term total")

    @property
    def batch_size(self) -> int:
        return self.world * self.shape[0] * self.shape[1]

    def _chunks(self, first, seed: int) -> EnvChunks:
        return EnvChunks(first, functools.partial(_make_env, self.cfg), self.cfg.num_envs, seed,
                         self.rank, self.world)

    def _fresh_env(self, iteration: int):
        """Fresh environments (a resume whose checkpoint could not hold them)."""
        if not self.chunked:
            return _make_env(self.cfg, self.shape[0],
                             _env_seed(self.cfg, iteration, self.rank, self.shape[0]))
        e0 = self.cfg.num_envs
        seed = _env_seed(self.cfg, iteration, 0, e0)
        env = self._chunks(_make_env(self.cfg, e0, seed + self.rank * e0), seed)
        env.set_active(self.shape[0] // e0)
        return env

    def run(self, resume) -> TrainResult:
        cfg, ppo, run, device, model = (self.cfg, self.ppo, self.run_dir, self.device,
                                        self.model)
        optimizer = make_optimizer(model, ppo)
        sample_gen = torch.Generator(device=device).manual_seed(
            cfg.seed + RANK_SEED_STRIDE * self.rank)
        perm_gen = torch.Generator(device=device).manual_seed(
            cfg.seed + 1 + RANK_SEED_STRIDE * self.rank)
        recent: deque = deque(maxlen=cfg.return_window)
        iteration = agent_steps = episodes_total = 0
        next_obs = None
        if resume is not None:
            common, mine, iteration = resume
            load_run_state(model, optimizer, common, cfg.resolved_run_dir())
            sample_gen.set_state(mine["sample_gen"])
            perm_gen.set_state(mine["perm_gen"])
            torch.set_rng_state(mine["torch_rng"])
            agent_steps, episodes_total = common["agent_steps"], common["episodes_total"]
            recent.extend(common["recent_returns"])
            if self.grouped is not None:
                self.grouped.load_state_dict(common.get("gns"))
            else:
                self.free.load_state_dict(common.get("gns"))
            if self.schedule is not None and common.get("schedule") is not None:
                self.schedule.load_state_dict(common["schedule"])
                self.shape = self.schedule.shape
            if run is not None:
                run.truncate_metrics(after_iteration=iteration)
            if self.chunked and _saved_chunks(mine.get("env_state")):
                self.env.reset()  # then as many chunks as were saved, to write them into
                self.env.set_active(_saved_chunks(mine.get("env_state")))
            fresh = self.env
            self.env = restore_env(self.env, mine, lambda: self._fresh_env(iteration))
            if self.env is fresh:
                next_obs = mine["next_obs"].to(device)
        try:
            return self._iterate(optimizer, sample_gen, perm_gen, recent, iteration,
                                 agent_steps, episodes_total, next_obs, resume is not None)
        finally:
            self.env.close()

    def _iterate(self, optimizer, sample_gen, perm_gen, recent, iteration, agent_steps,
                 episodes_total, next_obs, resumed) -> TrainResult:
        cfg, ppo, comm, run, device, model = (self.cfg, self.ppo, self.comm, self.run_dir,
                                              self.device, self.model)
        if next_obs is None:
            obs, _ = self.env.reset()
            next_obs = to_device(obs, device)
        total_iterations = cfg.total_agent_steps // self.batch_size
        if run is not None:
            run.mark_running(iteration, agent_steps, f"device={device}"
                             + (f", {self.world} data-parallel ranks" if self.world > 1 else ""))
        writer = run.tensorboard_writer(purge_step=agent_steps + 1 if resumed else None) \
            if run is not None else None
        # Options of rl.trainer's loop, applied the same way (read with getattr so that this
        # loop keeps working whichever of them a TrainConfig has).
        if uses_channels_last(cfg, device):
            model.to(memory_format=torch.channels_last)
        net = torch.compile(model) if cfg.compile and device.type == "cuda" else model
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and
                                  device.type == "cuda")
        if getattr(cfg, "cpu_bf16", False) and device.type == "cpu":
            model.register_forward_hook(trainer_module._outputs_to_fp32)
            autocast = torch.autocast("cpu", dtype=torch.bfloat16)
        buffer = RolloutBuffer(self.shape[1], self.shape[0], next_obs, device)
        frames_per_step = self.env.frames_per_step
        start_time = time.perf_counter()
        reached = bool(recent) and cfg.target_return is not None and \
            np.mean(recent) >= cfg.target_return and len(recent) == cfg.return_window
        progress = _Progress(cfg.total_agent_steps if self.schedule is not None
                             else total_iterations * self.batch_size, agent_steps,
                             self.quiet or not self.main)
        try:
            while not reached:
                batch_size = self.batch_size
                if self.schedule is None:
                    if iteration >= total_iterations:
                        break
                    lr = learning_rate_at(ppo, iteration, total_iterations)
                else:
                    if agent_steps + batch_size > cfg.total_agent_steps:
                        break
                    lr = self.schedule.learning_rate(ppo.learning_rate, ppo.anneal_lr,
                                                     agent_steps, cfg.total_agent_steps)
                set_learning_rate(optimizer, lr)
                t0 = time.perf_counter()
                with autocast:
                    next_obs, next_value, episodes = collect(self.env, net, buffer, next_obs,
                                                             sample_gen, device)
                t1 = time.perf_counter()
                adv, returns, mask = compute_gae(
                    buffer.rewards, buffer.values, next_value, buffer.terminated,
                    buffer.truncated, buffer.autoreset, ppo.gamma, ppo.gae_lambda)
                train_adv, ppo_run = adv.flatten(), ppo
                if self.world > 1 and ppo.norm_adv:
                    train_adv = _global_normalize(comm, adv.flatten(), mask.flatten())
                    ppo_run = dataclasses.replace(ppo, norm_adv=False)
                batch = {
                    "obs": buffer.obs.flatten(0, 1),
                    "actions": buffer.actions.flatten(),
                    "logprobs": buffer.logprobs.flatten(),
                    "values": buffer.values.flatten(),
                    "advantages": train_adv,
                    "returns": returns.flatten(),
                    "mask": mask.flatten(),
                }
                gns_row, sync = {}, None
                if self.grouped is not None:
                    gns_row = self.grouped.maybe_measure(iteration, model, optimizer, ppo,
                                                         buffer, adv, returns, mask)
                else:
                    sync, skipped = self.free.hook(comm, self.parts, iteration, optimizer)
                    if skipped:
                        gns_row = {"gns/skipped": 1}
                dump = self._dump_before(iteration, buffer, adv, returns, mask) \
                    if sync is not None and sync.measure and self.dump_dir else None
                with autocast:
                    stats = ppo_update(net, optimizer, batch, ppo_run, perm_gen, grad_hook=sync)
                t2 = time.perf_counter()
                if sync is not None and sync.measure:
                    mb = buffer.num_envs * buffer.num_steps // ppo.num_minibatches
                    gns_row = self.free.record(sync, mb, self.world, ppo.num_minibatches == 1,
                                               seconds=sync.seconds)
                stats = self._mean_stats(stats)
                losses = [stats[k] for k in ("policy_loss", "value_loss", "entropy")]
                if not all(math.isfinite(x) for x in losses) or not _finite_params(model):
                    last = run.list_checkpoints() if run is not None else []
                    raise NonFiniteLossError(non_finite_advice(
                        iteration + 1, losses, cfg.resolved_run_dir(), last))
                ep_returns, ep_lengths = self._gather_episodes(episodes)
                iteration += 1
                agent_steps += batch_size
                episodes_total += len(ep_returns)
                recent.extend(ep_returns)
                row = {
                    "iteration": iteration,
                    "agent_steps": agent_steps,
                    "frames": agent_steps * frames_per_step,
                    "rollout_batch_size": batch_size,
                    "learning_rate": lr,
                    "episodes": len(ep_returns),
                    "episodes_total": episodes_total,
                    "return_mean": float(np.mean(ep_returns)) if ep_returns else math.nan,
                    "return_recent": float(np.mean(recent)) if recent else math.nan,
                    "length_mean": float(np.mean(ep_lengths)) if ep_lengths else math.nan,
                    **self._rollout_stats(buffer, returns, mask),
                    **{k: stats[k] for k in ("policy_loss", "value_loss", "entropy",
                                             "approx_kl", "clip_fraction", "grad_norm")},
                    "wall_time_s": time.perf_counter() - start_time,
                    "sps": batch_size / (t2 - t0),
                    "rollout_s": t1 - t0,
                    "update_s": t2 - t1,
                    **gns_row,
                }
                reached = (cfg.target_return is not None and len(recent) == cfg.return_window
                           and row["return_recent"] >= cfg.target_return)
                row["reached_target"] = reached
                row.update(world_size=self.world, num_envs=self.shape[0],
                           num_steps=self.shape[1])
                if self.world > 1:
                    row["dp/params_in_sync"] = self._check_sync(iteration)
                if dump is not None:
                    self._dump_after(dump, iteration - 1, row)
                new_shape = self._schedule_step(gns_row, row)
                if run is not None:
                    run.append_metrics(row)
                    log_scalars(writer, row, agent_steps)
                if new_shape is not None:
                    self.shape = new_shape
                    if self.chunked:
                        obs = self.env.set_active(new_shape[0] // cfg.num_envs)
                        next_obs = to_device(obs, device)
                    buffer = RolloutBuffer(self.shape[1], self.shape[0], next_obs, device)
                final = (iteration == total_iterations if self.schedule is None
                         else agent_steps + self.batch_size > cfg.total_agent_steps)
                if iteration % cfg.checkpoint_every == 0 or final or reached:
                    self._save(model, optimizer, sample_gen, perm_gen, next_obs, iteration,
                               agent_steps, episodes_total, recent)
                    if run is not None:
                        run.mark_running(iteration, agent_steps)
                progress.update(row)
                if self.on_iteration is not None and self.main:
                    self.on_iteration(row)
        finally:
            progress.close()
        if run is not None:
            run.mark_finished(iteration, agent_steps,
                              "reached target" if reached else "budget spent")
            if self.schedule is not None:
                try:
                    plot_schedule(run.path)
                except Exception as exc:  # a plot must not fail a finished run
                    print(f"warning: could not plot the batch schedule: {exc}")
        return TrainResult(run.path if run is not None else self.cfg.resolved_run_dir(),
                           iteration, agent_steps,
                           float(np.mean(recent)) if recent else math.nan, reached)

    # --- per-iteration pieces ----------------------------------------------------------------

    def _mean_stats(self, stats: dict[str, float]) -> dict[str, float]:
        if self.world == 1:
            return stats
        keys = sorted(stats)
        t = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=self.device)
        t = self.comm.all_reduce_sum(t) / self.world
        return dict(zip(keys, t.tolist(), strict=True))

    def _gather_episodes(self, episodes) -> tuple[list[float], list[int]]:
        if self.world == 1:
            return episodes.returns, episodes.lengths
        every = self.comm.all_gather_object((episodes.returns, episodes.lengths))
        return [x for r, _ in every for x in r], [x for _, n in every for x in n]

    def _rollout_stats(self, buffer, returns, mask) -> dict[str, float]:
        values, returns, mask = buffer.values.flatten(), returns.flatten(), mask.flatten()
        if self.world == 1:
            return {"explained_variance": _explained_variance(values, returns, mask),
                    "masked_fraction": float(1 - mask.mean())}
        keep = mask.bool()
        y = returns[keep].to(torch.float64)
        r = y - values[keep].to(torch.float64)
        sums = torch.stack([y.new_tensor(float(y.numel())), y.sum(), y.square().sum(), r.sum(),
                            r.square().sum(), y.new_tensor(float(mask.numel()))])
        n, sy, syy, sr, srr, slots = self.comm.all_reduce_sum(sums).tolist()
        var_y = (syy - sy * sy / n) / (n - 1) if n > 1 else math.nan
        var_r = (srr - sr * sr / n) / (n - 1) if n > 1 else math.nan
        ev = math.nan if not var_y or var_y != var_y else 1 - var_r / var_y
        return {"explained_variance": ev, "masked_fraction": 1 - n / slots}

    def _check_sync(self, iteration: int) -> float:
        digests = self.comm.all_gather_object(_params_digest(self.model))
        if len(set(digests)) != 1:
            raise RuntimeError(f"data-parallel ranks hold different parameters after iteration "
                               f"{iteration} (SHA-1 {digests}); this is a bug")
        return 1.0

    def _schedule_step(self, gns_row: dict, row: dict) -> tuple[int, int] | None:
        if self.schedule is None:
            return None
        term = self.schedule.cfg.batch_term
        decision = None
        if f"gns/{term}/g2" in gns_row:
            decision = self.schedule.observe(gns_row[f"gns/{term}/g2"],
                                             gns_row[f"gns/{term}/trace_sigma"])
        if self.world > 1:  # rank 0 decides; every rank applies the same decision
            decision, state = self.comm.broadcast_object(
                (decision, self.schedule.state_dict()) if self.main else None)
            self.schedule.load_state_dict(state)
        row.update(self.schedule.columns())
        return decision

    def _save(self, model, optimizer, sample_gen, perm_gen, next_obs, iteration, agent_steps,
              episodes_total, recent) -> None:
        env_state = _env_state(self.env)
        mine = {
            "sample_gen": sample_gen.get_state(),
            "perm_gen": perm_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "env_state": env_state,
            "next_obs": next_obs.cpu() if env_state is not None else None,
        }
        ranks = self.comm.gather_object(mine)
        if self.run_dir is None:
            return
        gns = self.grouped.state_dict() if self.grouped is not None else self.free.state_dict()
        self.run_dir.save_checkpoint(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                **mine,  # rank 0's own state at the top: also a plain rl.trainer checkpoint
                "agent_steps": agent_steps,
                "episodes_total": episodes_total,
                "recent_returns": list(recent),
                "gns": gns,
                "rank_states": ranks if self.world > 1 else None,
                "world_size": self.world,
                "schedule": None if self.schedule is None else self.schedule.state_dict(),
            },
            iteration,
        )

    def _dump_before(self, iteration, buffer, adv, returns, mask) -> dict:
        return {
            "iteration": iteration, "rank": self.rank, "world_size": self.world,
            "params_before": {k: v.detach().cpu().clone()
                              for k, v in self.model.state_dict().items()},
            "obs": buffer.obs.cpu().clone(), "actions": buffer.actions.cpu().clone(),
            "logprobs": buffer.logprobs.cpu().clone(), "values": buffer.values.cpu().clone(),
            "advantages": adv.cpu().clone(), "returns": returns.cpu().clone(),
            "mask": mask.cpu().clone(),
        }

    def _dump_after(self, dump: dict, iteration: int, row: dict) -> None:
        dump["params_after"] = {k: v.detach().cpu().clone()
                                for k, v in self.model.state_dict().items()}
        dump["row"] = dict(row)
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        torch.save(dump, self.dump_dir / f"it{iteration:06d}_rank{self.rank}.pt")
