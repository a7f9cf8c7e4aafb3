"""The PPO trainer: resume after SIGKILL, bad input, non-finite losses, Atari smoke run."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agents import PPOConfig
from rl.cli import main
from rl.runs.metrics import load_metrics
from rl.train import loop as loop_mod
from rl.train.config import PRESETS, TIMING_COLUMNS, NonFiniteLossError, TrainConfig
from rl.train.launch import train

CLASSIC_TRAIN, CLASSIC_PPO = PRESETS["classic"]


def cartpole(run_dir, **kw) -> tuple[TrainConfig, PPOConfig]:
    train_kw = {**CLASSIC_TRAIN, "run_dir": str(run_dir), **kw}
    return TrainConfig(env="CartPole", **train_kw), PPOConfig(**CLASSIC_PPO)


def comparable(df):
    timing = [c for c in df.columns if c in TIMING_COLUMNS or c.endswith("/seconds")]
    return df.drop(columns=timing).reset_index(drop=True)


def _rows(path) -> int:
    try:
        return sum(1 for _ in open(path))
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_resume_after_sigkill_reproduces_uninterrupted_rows(tmp_path):
    args = ["train", "--env", "CartPole", "--total-agent-steps", "15360",
            "--checkpoint-every", "5", "--seed", "3", "--quiet"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main([*args, "--run-dir", str(whole)]) == 0

    argv = [*args, "--run-dir", str(killed)]
    code = f"import sys; from rl.cli import main; sys.exit(main({argv!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code])
    # No deadline: on a loaded machine the rows come slowly; a run that ends first fails.
    while _rows(killed / "metrics.jsonl") < 13:
        assert proc.poll() is None, "the run finished before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows_at_kill = len(load_metrics(killed))
    state = json.loads((killed / "checkpoints" / "latest.json").read_text())
    assert 13 <= rows_at_kill < 60
    # At most one checkpoint interval (5 iterations) is lost.
    assert rows_at_kill - state["iteration"] <= 5

    assert main([*args, "--run-dir", str(killed), "--resume"]) == 0
    a, b = load_metrics(whole), load_metrics(killed)
    assert list(b["iteration"]) == list(range(1, 61))
    assert (killed / "status.json").exists()
    assert json.loads((killed / "status.json").read_text())["state"] == "finished"
    import pandas.testing as pdt

    pdt.assert_frame_equal(comparable(a), comparable(b))


def test_bad_inputs_fail_before_a_run_dir_exists(tmp_path, capsys):
    run_dir = tmp_path / "run"
    cases = [
        (["--num-envs", "3", "--num-steps", "7", "--num-minibatches", "4"], "not divisible"),
        (["--learning-rate", "-0.1"], "learning_rate must be > 0"),
        (["--learning-rate", "0"], "learning_rate must be > 0"),
        (["--network", "nature"], "needs 3-D image observations"),
        (["--env", "Cartpoll"], "Did you mean: CartPole"),
        (["--num-envs", "0"], "num_envs must be a positive integer"),
        (["--total-agent-steps", "100"], "less than one rollout"),
        (["--device", "cuda:0"] if not _has_cuda() else ["--device", "tpu"], "device"),
    ]
    for flags, message in cases:
        assert main(["train", "--run-dir", str(run_dir), "--quiet", *flags]) == 2, flags
        err = capsys.readouterr().err
        assert message in " ".join(err.split()), (flags, err)
        assert not run_dir.exists(), flags


def _has_cuda():
    import torch

    return torch.cuda.is_available()


def test_fresh_run_refuses_to_overwrite_and_resume_checks_config(tmp_path, capsys):
    run_dir = tmp_path / "run"
    base = ["train", "--run-dir", str(run_dir), "--total-agent-steps", "512", "--quiet"]
    assert main(base) == 0
    assert main(base) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main([*base, "--resume", "--learning-rate", "0.5"]) == 2
    assert "learning_rate" in capsys.readouterr().err
    # A longer budget is an allowed change on resume.
    assert main([*base[:4], "1024", "--quiet", "--resume"]) == 0
    assert list(load_metrics(run_dir)["iteration"]) == [1, 2, 3, 4]


def test_non_finite_loss_stops_with_clear_error_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    real_update = loop_mod.ppo_update
    calls = {"n": 0}

    def poisoned_update(model, *args, **kwargs):
        calls["n"] += 1
        stats = real_update(model, *args, **kwargs)
        if calls["n"] == 7:
            next(model.parameters()).data.fill_(float("nan"))
        return stats

    monkeypatch.setattr(loop_mod, "ppo_update", poisoned_update)
    cfg, ppo = cartpole(tmp_path / "run", total_agent_steps=256 * 20, checkpoint_every=5)
    with pytest.raises(NonFiniteLossError, match="last good checkpoint is iteration 5") as err:
        train(cfg, ppo)
    # The advice is one that works: a new run dir with a lower rate (a resume may not
    # change the rate, so the error must not suggest one).
    advice = " ".join(str(err.value).split())
    assert "new --run-dir with a lower --learning-rate" in advice
    assert "then --resume" not in advice
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and "non-finite" in status["message"]
    assert json.loads((tmp_path / "run/checkpoints/latest.json").read_text())["iteration"] == 5
    assert len(load_metrics(tmp_path / "run")) == 6  # rows up to the last good iteration

    monkeypatch.setattr(loop_mod, "ppo_update", real_update)
    cfg.resume = True
    result = train(cfg, ppo)
    assert result.iterations == 20
    df = load_metrics(tmp_path / "run")
    assert list(df["iteration"]) == list(range(1, 21))
    assert np.isfinite(df["policy_loss"]).all()


def test_loss_that_becomes_nan_is_caught(tmp_path, monkeypatch):
    real_update = loop_mod.ppo_update

    def nan_update(*args, **kwargs):
        stats = real_update(*args, **kwargs)
        stats["value_loss"] = float("nan")
        return stats

    monkeypatch.setattr(loop_mod, "ppo_update", nan_update)
    cfg, ppo = cartpole(tmp_path / "run", total_agent_steps=256 * 3)
    with pytest.raises(NonFiniteLossError, match="value_loss=nan"):
        train(cfg, ppo)


@pytest.mark.slow
@pytest.mark.parametrize("env, backend", [("Pong", "envpool"), ("Breakout", "ale")])
def test_short_atari_run_on_cpu_writes_metrics_and_resumes(tmp_path, env, backend):
    run_dir = tmp_path / env
    cfg = TrainConfig(env=env, backend=backend, num_envs=4, num_steps=16, network="nature",
                      total_agent_steps=64 * 3, checkpoint_every=2, run_dir=str(run_dir),
                      device="cpu")
    result = train(cfg, PPOConfig())
    assert result.iterations == 3
    df = load_metrics(run_dir)
    for col in ("policy_loss", "value_loss", "entropy", "approx_kl", "sps"):
        assert np.isfinite(df[col]).all(), col
    assert (df["frames"] == 4 * df["agent_steps"]).all()
    assert any(Path(run_dir, "tb").iterdir())
    cfg.total_agent_steps, cfg.resume = 64 * 5, True
    assert train(cfg, PPOConfig()).iterations == 5
    assert list(load_metrics(run_dir)["iteration"]) == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_cartpole_learns_for_three_seeds_and_sb3_parity(tmp_path):
    """CartPole-v1: mean return >= 475 over the last 20 games within 100k agent steps, for
    3 of 3 seeds, for our PPO and for SB3's PPO with the same settings and harness."""
    from rl.peers.sb3 import train_sb3

    budget = 100_000
    for seed in range(3):
        cfg, ppo = cartpole(tmp_path / f"s{seed}", seed=seed, target_return=475,
                            total_agent_steps=budget)
        ours = train(cfg, ppo)
        assert ours.reached_target and ours.agent_steps <= budget, (seed, ours)
        theirs = train_sb3(cfg, ppo)
        assert theirs.reached_target and theirs.agent_steps <= budget, (seed, theirs)
        print(f"seed {seed}: ours {ours.agent_steps} agent steps, SB3 {theirs.agent_steps}")


TINY = ["train", "--env", "CartPole", "--total-agent-steps", "512", "--checkpoint-every", "1",
        "--gns-every", "0", "--quiet"]


def test_sigterm_marks_the_run_failed_like_ctrl_c(tmp_path):
    """#24 item 10: SIGTERM used to end the process with status.json still at "running"."""
    run_dir = tmp_path / "run"
    argv = [*TINY[:4], "1000000", *TINY[5:], "--run-dir", str(run_dir)]
    code = f"import sys; from rl.cli import main; sys.exit(main({argv!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        while _rows(run_dir / "metrics.jsonl") < 1:  # no deadline: a loaded machine is slow
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 130, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["state"], status["message"]) == ("failed", "KeyboardInterrupt: SIGTERM")


def test_checkpoints_load_weights_only_and_a_resume_without_one_refuses(tmp_path, capsys):
    """#24 item 1: a resume that finds no usable checkpoint changes nothing and says so
    (it used to start over, deleting the rows and events even of a finished run); --restart
    starts over on purpose, also where tb/ is a link to storage elsewhere."""
    import torch

    run_dir = tmp_path / "run"
    assert main([*TINY, "--run-dir", str(run_dir)]) == 0
    payload = torch.load(run_dir / "checkpoints" / "ckpt_00000002.pt", weights_only=True)
    assert payload["state"]["env_state"] is not None and "env" not in payload["state"]
    events = tmp_path / "events"
    (run_dir / "tb").rename(events)
    (run_dir / "tb").symlink_to(events)
    for path in (run_dir / "checkpoints").iterdir():
        path.unlink()
    metrics, status = ((run_dir / name).read_bytes() for name in ("metrics.jsonl", "status.json"))
    capsys.readouterr()
    assert main([*TINY, "--run-dir", str(run_dir), "--resume"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "found no checkpoint, 2 metrics row(s), status finished" in err and "--restart" in err
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics
    assert (run_dir / "status.json").read_bytes() == status
    assert len(list(events.iterdir())) == 1

    assert main([*TINY, "--run-dir", str(run_dir), "--restart", "--resume"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    # Started over on purpose: no row, event or checkpoint of the earlier attempt is kept.
    assert main([*TINY, "--run-dir", str(run_dir), "--restart"]) == 0
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2]
    assert (run_dir / "tb").is_symlink() and len(list(events.iterdir())) == 1
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


def test_resume_refuses_damaged_or_gapped_metrics(tmp_path, capsys):
    """#24 item 11: a damaged row of a finished run became a silent gap on --resume (the
    row was dropped and training continued after it); so did a missing one."""
    import shutil

    base = tmp_path / "base"
    assert main([*TINY[:4], "1024", *TINY[5:], "--run-dir", str(base)]) == 0
    lines = (base / "metrics.jsonl").read_text().splitlines(keepends=True)
    longer = [*TINY[:4], "1536", *TINY[5:], "--resume"]
    for name, kept, message in [
            ("damaged", [*lines[:1], '{"iteration": 2, "retu\n', *lines[2:]],
             "metrics.jsonl:2: unreadable metrics line"),
            ("gapped", [*lines[:1], *lines[2:]], "lacks the rows of iteration(s) 2 up to the "
             "checkpoint's iteration 4")]:
        run_dir = tmp_path / name
        shutil.copytree(base, run_dir)
        (run_dir / "metrics.jsonl").write_text("".join(kept))
        capsys.readouterr()
        assert main([*longer, "--run-dir", str(run_dir)]) == 2, name
        err = " ".join(capsys.readouterr().err.split())
        assert message in err and "--restart" in err, err
        assert (run_dir / "metrics.jsonl").read_text() == "".join(kept)
        assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


def test_resume_refuses_crafted_incomplete_or_locked_runs(tmp_path, capsys):
    import shutil

    import torch

    from rl.runs.storage import RunDir

    base = tmp_path / "base"
    assert main([*TINY, "--run-dir", str(base)]) == 0
    capsys.readouterr()

    # A crafted checkpoint (a pickle that would run a command) is refused, not executed.
    crafted = tmp_path / "crafted"
    shutil.copytree(base, crafted)
    marker = tmp_path / "pwned"
    torch.save({"format": 2, "iteration": 2, "state": {"x": _RunsACommand(marker)}},
               crafted / "checkpoints" / "ckpt_00000002.pt")
    assert main([*TINY, "--run-dir", str(crafted), "--resume"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "refusing to load" in err and "can run code" in err
    assert not marker.exists()

    # A checkpoint without the trainer's keys: one clear error, no traceback.
    partial = tmp_path / "partial"
    shutil.copytree(base, partial)
    state, it = RunDir(partial).load_latest_checkpoint()
    del state["optimizer"]
    RunDir(partial).save_checkpoint(state, it)
    assert main([*TINY, "--run-dir", str(partial), "--resume"]) == 2
    assert "lacks optimizer" in " ".join(capsys.readouterr().err.split())

    # Another process holds the run: refused, naming it.
    code = ("import sys; from rl.runs.lock import lock_run_dir; lock_run_dir(sys.argv[1]); "
            "print('held', flush=True); sys.stdin.readline()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(base)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main([*TINY, "--run-dir", str(base), "--resume",
                     "--total-agent-steps", "768"]) == 2
        assert f"in use by process {holder.pid}" in " ".join(capsys.readouterr().err.split())
    finally:
        holder.kill()
        holder.wait()
        holder.stdin.close()
        holder.stdout.close()


class _RunsACommand:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_bad_options_and_filesystem_failures_are_one_line_errors(tmp_path, capsys,
                                                                  monkeypatch):
    import errno
    import math

    from rl.runs.storage import RunDir

    run_dir = tmp_path / "run"
    for flags in (["--total-agent-steps", "inf"], ["--learning-rate", "inf"],
                  ["--ent-coef", "inf"], ["--clip-coef", "inf"], ["--gamma", "nan"],
                  ["--target-return", "inf"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--run-dir", str(run_dir), "--quiet", *flags])
        assert exit_info.value.code == 2, flags
        assert "finite" in capsys.readouterr().err, flags
    assert main(["train", "--run-dir", str(run_dir), "--quiet", "--nproc", "0"]) == 2
    assert "nproc must be a positive integer" in capsys.readouterr().err
    for field in ("learning_rate", "ent_coef", "clip_coef", "max_grad_norm", "vf_coef"):
        cfg, ppo = cartpole(run_dir)
        setattr(ppo, field, math.inf)
        with pytest.raises(ValueError, match=f"{field} must be a finite number"):
            train(cfg, ppo)
    assert not run_dir.exists()

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main([*TINY, "--run-dir", str(blocker / "run")]) == 2
    err = capsys.readouterr().err
    assert "Not a directory" in err and "a file stands where" in " ".join(err.split())

    def disk_full(self, row):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.metrics_path))

    monkeypatch.setattr(RunDir, "append_metrics", disk_full)
    assert main([*TINY, "--run-dir", str(tmp_path / "full")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "No space left on device" in err and "free some disk space" in err


def test_bf16_update_sees_its_own_steps(tmp_path):
    """Under cpu_bf16 each minibatch must see the weights of the optimizer steps before it.

    The update runs inside the loop's autocast context; with autocast's weight-cast cache on,
    every forward pass reused the first bf16 copy of the weights: the PPO ratio stayed 1
    (approx_kl and clip_fraction exactly 0 at every iteration) and Breakout barely learned.
    """
    cfg, ppo = cartpole(tmp_path / "run", total_agent_steps=3 * 256, gns_every=0,
                        cpu_bf16=True, device="cpu")
    train(cfg, ppo)
    df = load_metrics(tmp_path / "run")
    assert len(df) == 3 and (df["approx_kl"] > 0).all(), df["approx_kl"].tolist()


def test_a_rollout_too_large_for_memory_is_refused_up_front(tmp_path, capsys, monkeypatch):
    """#24 item 14: ``--num-envs 10M`` is refused before any environment or buffer of that
    size exists, naming the memory it needs and what this machine has (here, 1 GiB)."""
    from rl.train import launch

    monkeypatch.setattr(launch, "available_memory_bytes", lambda: 2**30)
    run_dir = tmp_path / "big"
    assert main(["train", "--env", "CartPole", "--num-envs", "10000000", "--num-steps", "32",
                 "--total-agent-steps", "100G", "--run-dir", str(run_dir), "--quiet"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: 10,000,000 envs x 32 steps need at least " in err, err
    # 10M x 32 agent steps x (16 bytes of CartPole observation + 48) = 19.07 GiB, plus the
    # measured memory of the environments themselves
    needed = float(err.split("need at least ")[1].split(" GiB")[0].replace(",", ""))
    assert needed >= 19.07, err
    assert "1.0 GiB available; lower --num-envs or --num-steps" in err
    assert not run_dir.exists()
    # A rollout that fits is not probed at all, and trains.
    assert main([*TINY, "--run-dir", str(tmp_path / "small")]) == 0


def test_more_noise_groups_than_the_rollout_has_are_named(tmp_path, capsys):
    """#24 item 14: --gns-groups 1000 on 8 environments says it measures 8 groups of 1."""
    assert main([*TINY[:-3], "--gns-every", "1", "--num-envs", "8", "--gns-groups", "1000",
                 "--quiet", "--run-dir", str(tmp_path / "run")]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "warning: --gns-groups 1000: a rollout of 8 envs x 32 steps gives 8 groups of 1 " \
           "env(s); the noise scale uses those" in err, err
    rows = load_metrics(tmp_path / "run")
    assert set(rows["gns/groups"].dropna()) == {8}
