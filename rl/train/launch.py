"""Start a training run: validate, build each rank's loop, and run it.

``train(cfg, ppo, ...)`` is the one library entry: one process with a fixed batch by
default; ``parallel=ParallelConfig(nproc=N)`` spawns N data-parallel processes (gloo on
CPU, NCCL on CUDA, one GPU each), and under torchrun the calling process is one rank;
``adaptive=AdaptiveConfig(...)`` lets the batch follow the noise scale; ``override``
(PBT) puts other PPO hyperparameters in force. Every combination runs the same
``rl.train.loop.Loop``. See docs/scale-out.md and docs/training-loop.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import math
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp

import envs
from agents import PPOConfig, build_actor_critic, make_optimizer
from rl.measure.free import FreeNoiseScale
from rl.measure.ppo_noise import PPONoiseScale, plan_split
from rl.measure.returns import SmoothedReturn
from rl.runs.metrics import load_metrics
from rl.runs.storage import RunDir
from rl.train.batch_schedule import AdaptiveBatch, BatchSchedule, FixedBatch
from rl.train.comm import DistComm, LocalComm
from rl.train.config import (
    RESUMABLE_CHANGES,
    AdaptiveConfig,
    ParallelConfig,
    PPOOverride,
    TrackConfig,
    TrainConfig,
    TrainResult,
    config_dict,
    resolve_device,
)
from rl.train.env_chunks import EnvChunks
from rl.train.hooks import (
    Callback,
    DebugDump,
    LayoutColumns,
    SchedulePlot,
    SyncCheck,
    progress_hook,
)
from rl.train.loop import Loop
from rl.train.protocols import Comm
from rl.train.tracking import WandbLog, import_wandb
from rl.train.train_state import (
    CHECKPOINT_KEYS,
    TrainState,
    distribute_checkpoint,
    restore_env,
    restore_normalization,
    saved_chunks,
)

RANK_SEED_STRIDE = 1_000_003
"""Rank r samples actions and minibatch orders from seed + RANK_SEED_STRIDE r."""

TIMEOUT = datetime.timedelta(minutes=10)
"""How long a rank waits for the others in a collective."""


class PeerFailed(RuntimeError):
    """Another rank failed first; its error is the one to report."""


@dataclass
class Launch:
    """What every rank needs to build its loop (picklable: sent to spawned processes)."""

    cfg: TrainConfig
    ppo: PPOConfig
    """The settings the run was started with (config.json's ``ppo``)."""
    parallel: ParallelConfig
    adaptive: AdaptiveConfig
    override: PPOOverride | None = None
    quiet: bool = True
    on_iteration: Callable[[dict], None] | None = None
    dump_dir: str | None = None
    layout_columns: bool = False
    """Rows carry world_size, num_envs and num_steps."""
    restart: bool = False
    """Start the existing run in run_dir over from iteration 0 (``train``'s ``restart``)."""
    progress_interval_s: float = 30.0
    """Off a terminal, seconds between progress lines (``train``'s ``progress_interval_s``)."""
    track: TrackConfig | None = None
    """Weights & Biases logging beside TensorBoard (rank 0; ``train``'s ``track``)."""

    @property
    def ppo_in_force(self) -> PPOConfig:
        return self.ppo if self.override is None else self.override.apply(self.ppo)

    def config(self, world: int) -> dict[str, Any]:
        """The run's config.json."""
        config = {"train": config_dict(self.cfg), "ppo": dataclasses.asdict(self.ppo)}
        if world > 1:
            config["parallel"] = dataclasses.asdict(self.parallel)
        if self.adaptive.adaptive:
            config["adaptive"] = dataclasses.asdict(self.adaptive)
        return config


def torchrun_env() -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) when started by torchrun (its environment), else None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return rank, world, int(os.environ.get("LOCAL_RANK", rank))


def train(
    cfg: TrainConfig,
    ppo: PPOConfig,
    *,
    parallel: ParallelConfig | None = None,
    adaptive: AdaptiveConfig | None = None,
    override: PPOOverride | None = None,
    on_iteration: Callable[[dict], None] | None = None,
    quiet: bool = True,
    debug_dump_dir: str | os.PathLike[str] | None = None,
    restart: bool = False,
    progress_interval_s: float = 30.0,
    track: TrackConfig | None = None,
) -> TrainResult | None:
    """Train PPO; everything is validated before any process or environment starts.

    ``override``: PPO hyperparameters in force instead of ``ppo``'s (``PPOOverride``).
    ``on_iteration(row)`` gets rank 0's rows (not with spawned processes). Returns the
    run's result; None on ranks other than 0 under torchrun. ``debug_dump_dir``: each
    data-parallel rank saves its rollout, parameters and row at every measured iteration.
    ``restart``: start the existing run in ``cfg.run_dir`` (same config rules as a resume)
    over from iteration 0, deleting its checkpoints, rows and TensorBoard events; a resume
    (``cfg.resume``) that finds no usable checkpoint refuses instead of doing this itself.
    Unless ``quiet``, rank 0 shows progress on stderr: a live bar on a terminal, else a
    plain line every ``progress_interval_s`` seconds (0: every iteration). ``track``: also
    log the rows to Weights & Biases (``TrackConfig``; wandb must be installed).
    """
    parallel, adaptive = parallel or ParallelConfig(), adaptive or AdaptiveConfig()
    layout = parallel.nproc > 1 or adaptive.adaptive or torchrun_env() is not None
    return _launch(cfg, ppo, parallel, adaptive, override, on_iteration, quiet,
                   debug_dump_dir, layout, restart, progress_interval_s, track)


def train_parallel(
    cfg: TrainConfig,
    ppo: PPOConfig,
    parallel: ParallelConfig | None = None,
    adaptive: AdaptiveConfig | None = None,
    *,
    quiet: bool = True,
    on_iteration: Callable[[dict], None] | None = None,
    debug_dump_dir: str | os.PathLike[str] | None = None,
    override: PPOOverride | None = None,
    restart: bool = False,
) -> TrainResult | None:
    """``train`` whose rows always say how the batch is laid out (world_size, num_envs,
    num_steps), also with one process and a fixed batch."""
    return _launch(cfg, ppo, parallel or ParallelConfig(), adaptive or AdaptiveConfig(),
                   override, on_iteration, quiet, debug_dump_dir, True, restart)


def _launch(cfg, ppo, parallel, adaptive, override, on_iteration, quiet, dump_dir,
            layout, restart, progress_interval_s=30.0, track=None) -> TrainResult | None:
    parallel.validate()
    if track is not None:
        track.validate()
        if track.track:
            import_wandb()  # a missing wandb says so before anything starts
    if not (isinstance(progress_interval_s, (int, float)) and progress_interval_s >= 0
            and math.isfinite(progress_interval_s)):
        raise ValueError(f"the progress interval must be a finite number of seconds >= 0, "
                         f"got {progress_interval_s!r}")
    if restart and cfg.resume:
        raise ValueError("--restart and --resume exclude each other: --resume continues the "
                         "run from its newest checkpoint, --restart starts it over from "
                         "iteration 0; pass one")
    launched = torchrun_env()
    if launched is not None and parallel.nproc not in (1, launched[1]):
        raise ValueError(f"--nproc {parallel.nproc} but torchrun started {launched[1]} "
                         "processes; leave --nproc out under torchrun")
    world = launched[1] if launched is not None else parallel.nproc
    parallel = dataclasses.replace(parallel, nproc=world)
    cfg = checked(cfg, ppo, parallel, adaptive, override)
    launch = Launch(cfg, ppo, parallel, adaptive, override, quiet, on_iteration,
                    None if dump_dir is None else str(dump_dir), layout, restart,
                    float(progress_interval_s), track)
    if launched is not None:
        rank, _, local_rank = launched
        device = rank_device(cfg, local_rank)
        own = world > 1 and not dist.is_initialized()
        if own:
            dist.init_process_group(_backend(parallel, device), timeout=TIMEOUT)
        try:
            result = run_rank(launch, rank, world, local_rank)
        finally:
            if own:
                dist.destroy_process_group()
        return result if rank == 0 else None
    if world == 1:
        return run_rank(launch, 0, 1, 0)
    if on_iteration is not None:
        raise ValueError("on_iteration is not available with spawned processes (nproc > 1); "
                         "read the run's metrics.jsonl instead (or start the ranks with "
                         "torchrun)")
    _spawn(world, launch)
    return _result_from(cfg.resolved_run_dir())


def checked(cfg: TrainConfig, ppo: PPOConfig, parallel: ParallelConfig,
            adaptive: AdaptiveConfig, override: PPOOverride | None = None) -> TrainConfig:
    """Validate everything before a process or environment starts; fill the default run dir."""
    cfg.validate()
    ppo.validate(cfg.rollout_batch_size)
    if override is not None:
        override.apply(ppo).validate(cfg.rollout_batch_size)
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
        if cfg.norm_obs or cfg.norm_reward:
            raise ValueError("--norm-obs/--norm-reward with --batch-schedule adaptive is not "
                             "supported (environments added mid-run would start their own "
                             "statistics); use a fixed batch, or turn normalization off")
    check_rollout_memory(cfg, world)
    if cfg.gns_every:
        split = plan_split(cfg.num_envs, cfg.num_steps, cfg.gns_groups)
        if split.num_groups != cfg.gns_groups and cfg.gns_groups != TrainConfig.gns_groups:
            unit = (f"{split.envs_per_group} env(s)" if split.axis == "envs"
                    else f"{split.steps_per_group} steps")
            warnings.warn(f"--gns-groups {cfg.gns_groups}: a rollout of {cfg.num_envs} envs x "
                          f"{cfg.num_steps} steps gives {split.num_groups} groups of {unit}; "
                          "the noise scale uses those", stacklevel=2)
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


# Runs this large (agent steps per rollout, or environments, per rank) are checked against
# the memory this machine has before anything starts: smaller ones fit (an Atari rollout of
# 65,536 steps holds 1.8 GB of frames), and the check builds a few environments (seconds).
MEMORY_CHECK_AGENT_STEPS = 65_536
MEMORY_CHECK_ENVS = 1_024
PROBE_ENVS = 16
# Bytes per agent step besides the observation: action, log-prob, value, reward, flags,
# their host staging copies, advantages and returns (rl/train/rollout.py, gae.py).
ROLLOUT_BYTES_PER_STEP = 48


def rollout_bytes(cfg: TrainConfig, obs_bytes: int) -> int:
    """A lower bound on the memory of one rank's rollout buffers."""
    return cfg.rollout_batch_size * (obs_bytes + ROLLOUT_BYTES_PER_STEP)


def available_memory_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (Linux), else the free physical pages; None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def probe_memory(cfg: TrainConfig) -> tuple[int, int]:
    """(observation bytes, resident bytes per environment) of ``cfg.env``, from a vector env
    of 1 and one of PROBE_ENVS environments (the second's growth of this process's memory)."""
    one = make_env(cfg, 1, cfg.seed)
    try:
        space = one.single_observation_space
        obs_bytes = math.prod(space.shape or (1,)) * np.dtype(space.dtype).itemsize
        before = _resident_bytes()
        more = make_env(cfg, PROBE_ENVS, cfg.seed)
        per_env = max(0, _resident_bytes() - before) // PROBE_ENVS
        more.close()
    finally:
        one.close()
    return obs_bytes, per_env


def check_rollout_memory(cfg: TrainConfig, world: int) -> None:
    """ValueError, before anything large is allocated, when the ranks' environments and
    rollouts would not fit in the memory this machine has available (#24 item 14:
    ``--num-envs 10M`` tried to build ten million environments)."""
    if cfg.rollout_batch_size < MEMORY_CHECK_AGENT_STEPS and cfg.num_envs < MEMORY_CHECK_ENVS:
        return
    available = available_memory_bytes()
    if available is None:
        return
    obs_bytes, env_bytes = probe_memory(cfg)
    on_host = world if resolve_device(cfg.device).type == "cpu" else 1
    needed = (rollout_bytes(cfg, obs_bytes) * on_host + env_bytes * cfg.num_envs * world)
    if needed > available:
        raise ValueError(
            f"{cfg.num_envs:,} envs x {cfg.num_steps:,} steps"
            + (f" on each of {world} ranks" if world > 1 else "")
            + f" need at least {needed / 2**30:,.1f} GiB (about {env_bytes:,} bytes per "
            f"environment, {obs_bytes:,} bytes of observation and {ROLLOUT_BYTES_PER_STEP} "
            f"more per agent step), and this machine has {available / 2**30:,.1f} GiB "
            "available; lower --num-envs or --num-steps")


def _backend(parallel: ParallelConfig, device: torch.device) -> str:
    if parallel.dist_backend != "auto":
        return parallel.dist_backend
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(cfg: TrainConfig, local_rank: int) -> torch.device:
    """The device of the rank with this local rank (CUDA: one GPU per rank)."""
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


# How long spawned ranks get to record an interruption (status, lock) after a SIGTERM
# before they are killed: a checkpoint write of the Nature CNN takes well under a second.
STOP_GRACE_SECONDS = 30.0


def _spawn(world: int, launch: Launch) -> None:
    ctx = tmp.get_context("spawn")
    errors = ctx.SimpleQueue()
    threads = max(1, (os.cpu_count() or 1) // world)
    port = _free_port()
    try:
        with sigterm_as_interrupt():
            processes = tmp.start_processes(
                _worker, args=(world, port, threads, errors, launch, os.getpid()),
                nprocs=world, join=False, start_method="spawn")
            try:
                while not processes.join():
                    pass
            except KeyboardInterrupt as exc:
                # SIGTERM (or Ctrl-C) of this process: the ranks stop as after their own
                # SIGTERM (the run is marked interrupted, the lock released), never left
                # training on their own (#24). Ctrl-C in a terminal reached them too: they
                # get a moment to finish recording it before a SIGTERM could cut that short.
                _stop_ranks(processes.processes, wait_first=exc.args != ("SIGTERM",))
                raise
    except (tmp.ProcessRaisedException, tmp.ProcessExitedException) as exc:
        reports = []
        while not errors.empty():
            reports.append(errors.get())
        reports.sort(key=lambda r: (r[1] == PeerFailed.__name__, r[0]))
        if not reports:
            raise RuntimeError(f"a data-parallel worker died: {exc}") from None
        rank, kind, message, is_value_error = reports[0]
        error_type = ValueError if is_value_error else RuntimeError
        raise error_type(f"{message} (rank {rank}, {kind})") from None


def _stop_ranks(processes, wait_first: bool) -> None:
    if wait_first:
        deadline = time.monotonic() + 5.0
        for proc in processes:
            proc.join(max(0.0, deadline - time.monotonic()))
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()


def _watch_parent(parent: int) -> None:
    """Stop this rank when the process that spawned it dies (SIGKILL leaves no chance to
    tell it): first as after a SIGTERM, then for good after STOP_GRACE_SECONDS."""
    while os.getppid() == parent:
        time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(STOP_GRACE_SECONDS)
    os._exit(3)


def _worker(rank: int, world: int, port: int, threads: int, errors, launch: Launch,
            parent: int) -> None:
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                     name="watch-parent").start()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(threads)
    try:
        device = rank_device(launch.cfg, rank)
        dist.init_process_group(_backend(launch.parallel, device), rank=rank, world_size=world,
                                timeout=TIMEOUT)
        try:
            run_rank(launch, rank, world, rank)
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


def env_seed(cfg: TrainConfig, iteration: int, rank: int, num_envs: int) -> int:
    """Rank r's base seed: seed + r num_envs at the start; derived from the iteration after."""
    base = cfg.seed if iteration == 0 else (cfg.seed + 7919 * iteration) % 2**30
    return base + rank * num_envs


def make_env(cfg: TrainConfig, num_envs: int, seed: int, *, gamma: float | None = None):
    """The run's vector env; with ``gamma`` (the PPO discount) wrapped in the normalization
    the config asks for (``norm_obs``, ``norm_reward``: ``envs.NormalizeVec``)."""
    env = envs.make_vec(cfg.env, num_envs, seed, backend=cfg.backend, preset=cfg.env_preset)
    if gamma is None or not (cfg.norm_obs or cfg.norm_reward):
        return env
    try:
        return envs.NormalizeVec(env, obs=cfg.norm_obs, reward=cfg.norm_reward, gamma=gamma,
                                 clip_obs=cfg.norm_obs_clip, clip_reward=cfg.norm_reward_clip)
    except BaseException:
        env.close()
        raise


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises ``KeyboardInterrupt("SIGTERM")`` meanwhile, so that a run stopped by
    it ends as after Ctrl-C: marked failed ("KeyboardInterrupt: SIGTERM", which a sweep
    resumes as interrupted) and its lock released, rather than the process vanishing with
    status.json at "running". Only where SIGTERM has its default action, on the main thread
    (the one that may set handlers): a host program's own handler is left alone."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_rank(launch: Launch, rank: int, world: int, local_rank: int) -> TrainResult:
    """Open the run (rank 0), load its checkpoint, build this rank's loop and run it."""
    with sigterm_as_interrupt():
        return _run_rank(launch, rank, world, local_rank)


def _run_rank(launch: Launch, rank: int, world: int, local_rank: int) -> TrainResult:
    cfg = launch.cfg
    device = rank_device(cfg, local_rank)
    comm = DistComm(device) if world > 1 else LocalComm()
    # torch_threads takes effect before anything is built: the network's initial weights
    # (orthogonal init, a QR factorization) differ in the last bits with the thread count,
    # so a seed would otherwise not reproduce across --parallel or OMP_NUM_THREADS (#24).
    threads = torch.get_num_threads()
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    try:
        return _run_rank_threads_set(launch, cfg, rank, world, device, comm)
    finally:
        if cfg.torch_threads:
            torch.set_num_threads(threads)


def _run_rank_threads_set(launch: Launch, cfg: TrainConfig, rank: int, world: int,
                          device: torch.device, comm: Comm) -> TrainResult:
    env = make_env(cfg, cfg.num_envs, env_seed(cfg, 0, rank, cfg.num_envs),
                   gamma=launch.ppo_in_force.gamma)
    run = None
    try:
        torch.manual_seed(cfg.seed)
        model = build_actor_critic(env.single_observation_space, env.single_action_space,
                                   cfg.network, log_std_init=cfg.log_std_init,
                                   state_dependent_std=cfg.state_dependent_std).to(device)
        comm.broadcast_params(model)
        checkpoint, failure = None, None
        if rank == 0:
            try:
                run = RunDir.open(cfg.resolved_run_dir(), launch.config(world),
                                  resume=cfg.resume or launch.restart,
                                  may_differ=RESUMABLE_CHANGES)
                checkpoint = open_checkpoint(run, launch)
            except Exception as exc:
                failure = exc
        message = comm.broadcast_object(None if failure is None else str(failure))
        if failure is not None:
            raise failure
        if message is not None:
            raise PeerFailed(f"rank 0 could not open the run directory: {message}")
        resume = distribute_checkpoint(comm, checkpoint)
    except BaseException:
        env.close()
        if run is not None:
            run.close()
        raise
    try:
        result = build_loop(launch, comm, run, device, env, model, resume).run_loop()
        # No rank leaves (and tears down its connections) while another still has messages
        # in flight: gloo can abort a process that exits mid-transfer.
        comm.barrier()
        return result
    except BaseException as exc:
        if run is not None:
            # The disk that failed the run may fail these too: the first error is the one
            # to report, not one from recording it (#24 item 3).
            with contextlib.suppress(OSError):
                run.mark_failed(f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(OSError):
                run.close()
            run = None
        raise
    finally:
        if run is not None:
            run.close()


def open_checkpoint(run: RunDir, launch: Launch) -> tuple[dict, int] | None:
    """The checkpoint a run continues from: the newest usable one on resume, else None.

    A resume without a usable checkpoint refuses (``RunDir.no_checkpoint_error``): starting
    over would replace the rows and events the run has. Only ``restart`` deletes them. So
    does one whose rows up to the checkpoint are damaged or have a gap; a PBT member's
    (``override``) may jump where it continued from a donor ahead of it (docs/sweeps.md).
    """
    if launch.restart:
        run.restart()
        return None
    if not launch.cfg.resume:
        return None
    checkpoint = run.load_latest_checkpoint(map_location="cpu", required=CHECKPOINT_KEYS)
    if checkpoint is None:
        raise run.no_checkpoint_error()
    run.check_resume_rows(checkpoint[1], contiguous=launch.override is None)
    return checkpoint


def build_loop(launch: Launch, comm: Comm, run: RunDir | None, device: torch.device, env, model,
               resume) -> Loop:
    """This rank's loop: strategies, hooks and the state, continued from ``resume``."""
    cfg, adaptive, world, rank = launch.cfg, launch.adaptive, comm.size, comm.rank
    ppo = launch.ppo_in_force
    try:
        if adaptive.adaptive:
            schedule = AdaptiveBatch(adaptive, cfg.num_envs, cfg.num_steps, world,
                                     cfg.total_agent_steps, rank)
            if schedule.chunked:
                env = EnvChunks(env, functools.partial(make_env, cfg), cfg.num_envs, cfg.seed,
                                rank, world)
        else:
            schedule = FixedBatch(cfg.num_envs, cfg.num_steps, world, cfg.total_agent_steps)
        noise = (FreeNoiseScale.for_ranks(comm, model, ppo, cfg.gns_every,
                                          cfg.gns_preconditioned)
                 if world > 1 else PPONoiseScale.from_config(cfg))
        if adaptive.adaptive and adaptive.batch_term not in noise.terms:
            raise ValueError(
                f"batch_term {adaptive.batch_term!r} is not measured by the data-parallel "
                f"estimate for this model/config (measured: {', '.join(noise.terms)}); use "
                "--batch-term total")
        stride = RANK_SEED_STRIDE * rank
        state = TrainState(
            model=model, optimizer=make_optimizer(model, ppo), env=env,
            sample_gen=torch.Generator(device=device).manual_seed(cfg.seed + stride),
            perm_gen=torch.Generator(device=device).manual_seed(cfg.seed + 1 + stride),
            returns=SmoothedReturn(cfg.return_window))
        if resume is not None:
            common, mine, iteration = resume
            state.load(common, mine, iteration, cfg.resolved_run_dir())
            noise.load_state_dict(common.get("gns"))
            schedule.load_state_dict(common.get("schedule"))
            if run is not None:
                run.truncate_metrics(after_iteration=iteration)
            chunks = saved_chunks(mine.get("env_state"))
            if isinstance(env, EnvChunks) and chunks:
                env.reset()  # then as many chunks as were saved, to write them into
                env.set_active(chunks)
            state.env = restore_env(env, mine, lambda: _fresh_env(launch, schedule, rank,
                                                                  iteration))
            if state.env is env:
                state.next_obs = mine["next_obs"].to(device)
            restore_normalization(state.env, mine.get("env_norm"))
    except BaseException:
        env.close()
        raise
    hooks = []
    if launch.layout_columns:
        hooks.append(LayoutColumns())
    if world > 1:
        hooks.append(SyncCheck())
    if launch.dump_dir:
        hooks.append(DebugDump(launch.dump_dir))
    if rank == 0 and not launch.quiet:
        hooks.append(progress_hook(schedule.total_steps, launch.progress_interval_s))
    if rank == 0 and launch.on_iteration is not None:
        hooks.append(Callback(launch.on_iteration))
    if adaptive.adaptive:
        hooks.append(SchedulePlot())
    if run is not None and launch.track is not None and launch.track.track:
        hooks.append(WandbLog(launch.track, run.path, launch.config(world)))
    columns = {} if launch.override is None else launch.override.row_columns(ppo)
    return Loop(cfg, ppo, state, device, schedule=schedule, noise=noise, comm=comm, run=run,
                hooks=hooks, columns=columns, resumed=resume is not None)


def _fresh_env(launch: Launch, schedule, rank: int, iteration: int):
    """Fresh environments (a resume whose checkpoint could not hold them)."""
    cfg = launch.cfg
    if not (schedule.adaptive and schedule.chunked):
        n = schedule.shape[0]
        return make_env(cfg, n, env_seed(cfg, iteration, rank, n),
                        gamma=launch.ppo_in_force.gamma)
    e0 = cfg.num_envs
    seed = env_seed(cfg, iteration, 0, e0)
    env = EnvChunks(make_env(cfg, e0, seed + rank * e0), functools.partial(make_env, cfg), e0,
                    seed, rank, schedule.world)
    env.set_active(schedule.shape[0] // e0)
    return env
