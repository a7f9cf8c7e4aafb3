"""Data-parallel PPO (rl/train/launch.py): two gloo ranks on CPU stay in sync, their free
noise-scale estimate equals the grouped estimator on the same rollouts, and resume works."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pandas.testing as pdt
import pytest
import torch

import envs
from agents import PPOConfig, build_actor_critic, make_optimizer
from rl.cli import main
from rl.measure.ppo_noise import TERMS, PPONoiseScale
from rl.runs.metrics import load_metrics
from rl.train.config import PRESETS, TIMING_COLUMNS, AdaptiveConfig, ParallelConfig, TrainConfig
from rl.train.launch import train, train_parallel

ROOT = Path(__file__).resolve().parents[3]
CLASSIC_TRAIN, CLASSIC_PPO = PRESETS["classic"]
# 2 ranks x 4 envs x 32 steps = 256 agent steps per iteration; a constant lr, so that a run
# continued to a larger budget is the same run as one given that budget from the start.
NUM_ENVS, NUM_STEPS, WORLD = 4, 32, 2
ITERS = 8
GNS_EVERY = 3  # measured iterations (0-based): 0, 3, 6


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def configs(run_dir, iterations, **kw) -> tuple[TrainConfig, PPOConfig]:
    train_kw = {**CLASSIC_TRAIN, "num_envs": NUM_ENVS, "num_steps": NUM_STEPS,
                "total_agent_steps": WORLD * NUM_ENVS * NUM_STEPS * iterations,
                "gns_every": GNS_EVERY, "checkpoint_every": 4, "run_dir": str(run_dir), **kw}
    return (TrainConfig(env="CartPole", **train_kw),
            PPOConfig(**{**CLASSIC_PPO, "anneal_lr": False}))


def cli_args(run_dir, iterations) -> list[str]:
    return ["train", "--env", "CartPole", "--num-envs", str(NUM_ENVS), "--num-steps",
            str(NUM_STEPS), "--total-agent-steps", str(WORLD * NUM_ENVS * NUM_STEPS * iterations),
            "--gns-every", str(GNS_EVERY), "--checkpoint-every", "4", "--no-anneal-lr",
            "--run-dir", str(run_dir), "--quiet"]


def comparable(df):
    timing = [c for c in df.columns if c in TIMING_COLUMNS or c.endswith("/seconds")]
    return df.drop(columns=timing).reset_index(drop=True)


@pytest.fixture(scope="module")
def dp_runs(tmp_path_factory):
    """whole: 8 iterations in one go (library, spawn); part: 4 iterations (CLI --nproc 2);
    resumed: part continued to 8 iterations under torchrun."""
    base = tmp_path_factory.mktemp("dp")
    whole, part, dump = base / "whole", base / "part", base / "dump"
    cfg, ppo = configs(whole, ITERS)
    result = train_parallel(cfg, ppo, ParallelConfig(nproc=WORLD), debug_dump_dir=dump)
    assert result.iterations == ITERS

    assert main([*cli_args(part, ITERS // 2), "--nproc", str(WORLD)]) == 0
    rows_before_resume = load_metrics(part)
    # torchrun (python -m torch.distributed.run) starting `python -m rl.cli train` per rank.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           str(WORLD), "-m", "rl.cli", *cli_args(part, ITERS), "--resume"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return types.SimpleNamespace(whole=whole, part=part, dump=dump, cfg=cfg, ppo=ppo,
                                 rows_before_resume=rows_before_resume)


@pytest.mark.slow
def test_rows_aggregate_over_ranks_and_ranks_stay_in_sync(dp_runs):
    m = load_metrics(dp_runs.whole)
    batch = WORLD * NUM_ENVS * NUM_STEPS
    assert list(m["iteration"]) == list(range(1, ITERS + 1))
    assert list(m["agent_steps"]) == [batch * i for i in range(1, ITERS + 1)]
    assert (m["rollout_batch_size"] == batch).all() and (m["world_size"] == WORLD).all()
    assert (m["num_envs"] == NUM_ENVS).all()
    assert list(m["episodes_total"]) == list(m["episodes"].cumsum())
    # Every iteration the ranks compared SHA-1 digests of their parameters.
    assert (m["dp/params_in_sync"] == 1.0).all()
    # And directly: the parameters each rank saved before and after its updates are equal.
    for it in range(0, ITERS, GNS_EVERY):
        r0, r1 = (torch.load(dp_runs.dump / f"it{it:06d}_rank{r}.pt", weights_only=False)
                  for r in range(WORLD))
        for key in ("params_before", "params_after"):
            assert r0[key].keys() == r1[key].keys()
            for name in r0[key]:
                assert torch.equal(r0[key][name], r1[key][name]), (it, key, name)
        changed = any(not torch.equal(r0["params_before"][n], r0["params_after"][n])
                      for n in r0["params_before"])
        assert changed
        # The ranks ran different environments.
        assert not torch.equal(r0["obs"], r1["obs"])
    config = json.loads((dp_runs.whole / "config.json").read_text())
    assert config["parallel"] == {"nproc": WORLD, "dist_backend": "auto"}


@pytest.mark.slow
def test_free_estimate_equals_grouped_estimator_on_the_same_rollouts(dp_runs):
    """The grouped estimator of rl.measure.ppo_noise, run by one process on the union of the
    two ranks'
    rollouts (split by environment into K = 2 groups = the ranks), at the same parameters."""
    env = envs.make_vec("CartPole", 1, 0)
    model = build_actor_critic(env.single_observation_space, env.single_action_space, "mlp")
    env.close()
    m = load_metrics(dp_runs.whole).set_index("iteration")
    for it in range(0, ITERS, GNS_EVERY):
        ranks = [torch.load(dp_runs.dump / f"it{it:06d}_rank{r}.pt", weights_only=False)
                 for r in range(WORLD)]

        def union(key, ranks=ranks):
            return torch.cat([d[key] for d in ranks], dim=1)  # (T, N) -> (T, WORLD x N)

        buffer = types.SimpleNamespace(obs=union("obs"), actions=union("actions"),
                                       logprobs=union("logprobs"), values=union("values"),
                                       num_steps=NUM_STEPS, num_envs=WORLD * NUM_ENVS)
        model.load_state_dict(ranks[0]["params_before"])
        grouped = PPONoiseScale(every=1, groups=WORLD).measure(
            model, make_optimizer(model, dp_runs.ppo), dp_runs.ppo, buffer,
            union("advantages"), union("returns"), union("mask"))
        row = m.loc[it + 1]
        assert row["gns/data_parallel"] == 1 and row["gns/groups"] == WORLD
        b = NUM_ENVS * NUM_STEPS
        assert row["gns/small_batch_size"] == grouped["gns/small_batch_size"] == b
        assert row["gns/big_batch_size"] == grouped["gns/big_batch_size"]
        assert grouped["gns/split_envs"] == row["gns/split_envs"] == 1
        for term in TERMS:
            for stat in ("g2", "trace_sigma"):
                free, ref = row[f"gns/{term}/{stat}"], grouped[f"gns/{term}/{stat}"]
                assert free == pytest.approx(ref, rel=1e-4), (it, term, stat)
    unmeasured = [i + 1 for i in range(ITERS) if i % GNS_EVERY]
    assert m.loc[unmeasured, "gns/total/g2"].isna().all()


@pytest.mark.slow
def test_resume_across_ranks_continues_the_same_run(dp_runs):
    part, whole = load_metrics(dp_runs.part), load_metrics(dp_runs.whole)
    assert list(dp_runs.rows_before_resume["iteration"]) == [1, 2, 3, 4]
    assert list(part["iteration"]) == list(range(1, ITERS + 1))
    assert (part["dp/params_in_sync"] == 1.0).all()
    # Environments, generators, optimizer and smoothing all restored: the same rows.
    pdt.assert_frame_equal(comparable(whole), comparable(part))
    ckpt = torch.load(sorted((dp_runs.part / "checkpoints").glob("ckpt_*.pt"))[-1],
                      weights_only=False)
    assert ckpt["iteration"] == ITERS and len(ckpt["state"]["rank_states"]) == WORLD
    assert json.loads((dp_runs.part / "status.json").read_text())["state"] == "finished"


@pytest.mark.slow
def test_rank0_setup_error_reaches_the_caller(dp_runs):
    with pytest.raises(ValueError, match="already holds a run"):
        train_parallel(dp_runs.cfg, dp_runs.ppo, ParallelConfig(nproc=WORLD))


def test_one_rank_fixed_batch_reproduces_the_trainer(tmp_path):
    cfg, ppo = configs(tmp_path / "a", 5, num_envs=8, gns_every=2, checkpoint_every=2)
    ppo = dataclasses.replace(ppo, anneal_lr=True, num_epochs=4)
    train(cfg, ppo)
    train_parallel(dataclasses.replace(cfg, run_dir=str(tmp_path / "b")), ppo)
    a, b = load_metrics(tmp_path / "a"), load_metrics(tmp_path / "b")
    assert len(a) == 5
    pdt.assert_frame_equal(comparable(a), comparable(b[a.columns]))
    # Its checkpoint is a plain trainer checkpoint too: the trainer resumes it.
    train(dataclasses.replace(cfg, run_dir=str(tmp_path / "b"), resume=True,
                              total_agent_steps=cfg.total_agent_steps + 256), ppo)
    assert list(load_metrics(tmp_path / "b")["iteration"]) == list(range(1, 7))


def test_bad_settings_fail_before_any_process_starts(tmp_path, monkeypatch):
    cfg, ppo = configs(tmp_path / "run", 4)
    two = ParallelConfig(nproc=2)
    cases = [
        (dict(ppo=dataclasses.replace(ppo, target_kl=0.02)), "target_kl"),
        (dict(parallel=ParallelConfig(nproc=2, dist_backend="nccl")), "nccl needs CUDA"),
        (dict(parallel=ParallelConfig(nproc=0)), "nproc must be a positive integer"),
        (dict(cfg=dataclasses.replace(cfg, total_agent_steps=200)), "less than one rollout"),
        (dict(adaptive=AdaptiveConfig(batch_schedule="adaptive"),
              cfg=dataclasses.replace(cfg, gns_every=0)), "--gns-every"),
        (dict(adaptive=AdaptiveConfig(batch_schedule="adaptive", batch_max=100)),
         "below the starting rollout batch"),
    ]
    for over, message in cases:
        kw = {"cfg": cfg, "ppo": ppo, "parallel": two, "adaptive": None, **over}
        with pytest.raises(ValueError, match=message):
            train_parallel(kw["cfg"], kw["ppo"], kw["parallel"], kw["adaptive"])
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ValueError, match="torchrun started 4"):
        train_parallel(cfg, ppo, ParallelConfig(nproc=2))
    assert not (tmp_path / "run").exists()


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (Linux /proc)."""
    found, frontier = set(), [pid]
    while frontier:
        parent = frontier.pop()
        for task in (Path("/proc") / str(parent) / "task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    frontier.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_ranks_stop_with_their_parent_and_free_the_run(tmp_path, stop):
    """#24 item 2: killing ``rlscale train --nproc 2`` stops its spawned ranks; the run is
    marked interrupted, its lock is free and --resume continues it. Started as a shell's
    background job (``cmd &``) is: with SIGINT ignored, which the ranks inherit, so torch's
    parent-death SIGINT does not reach them."""
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "rl.cli", "train", "--env", "CartPole", "--nproc", "2",
            "--num-envs", "2", "--num-steps", "16", "--total-agent-steps", "10M",
            "--checkpoint-every", "2", "--torch-threads", "1", "--run-dir", str(run_dir),
            "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        latest = run_dir / "checkpoints" / "latest.json"
        while not latest.exists():  # no deadline: a loaded machine is slow
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        ranks = _descendants(proc.pid)
        assert len(ranks) >= 2
        proc.send_signal(stop)
        proc.wait()
        # Liveness, not speed: the ranks get STOP_GRACE_SECONDS to record the interruption.
        give_up = time.monotonic() + 10 * 60
        while any(_alive(p) for p in ranks):
            assert time.monotonic() < give_up, f"ranks still alive: {ranks}"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "KeyboardInterrupt" in status["message"], status
    with open(run_dir / ".lock", "a+") as f:  # free: a non-blocking exclusive lock succeeds
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(f, fcntl.LOCK_UN)
    checkpoint = json.loads(latest.read_text())["iteration"]
    budget = (checkpoint + 2) * 2 * 2 * 16
    at = args.index("--total-agent-steps") + 1
    resumed = subprocess.run([*args[:at], str(budget), *args[at + 1:], "--resume"], env=env,
                             cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
