"""Tests for the protocol around a sweep's runs: the untrained-play floor of its targets
(rule, measurement, storage, refusal) and stage 2 (best_lr_seeds: the spec key, the recorded
choice, its planning, and both stages from one `rlscale sweep`)."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import rl.sweeps.protocol
from rl.measure.floor import (
    FLOOR_Z,
    UntrainedFloor,
    effective_z,
    floor_rule,
    normal_tail,
    untrained_returns,
)
from rl.runs.storage import RunDir
from rl.sweeps.executors import run_sweep
from rl.sweeps.protocol import (
    TargetBelowFloorError,
    check_untrained_floor,
    choose_stage_two,
    untrained_floors,
)
from rl.sweeps.results import results_table
from rl.sweeps.settings import SweepSpecError, SweepStateError
from rl.sweeps.spec import parse_spec, plan_runs, spec_to_raw, stored_spec
from rl.sweeps.state import (
    BEST_LR_FILE,
    UNTRAINED_FLOOR_FILE,
    BestLr,
    add_best_lrs,
    read_best_lrs,
    read_events,
    read_untrained_floors,
)

BASE = dict(env="CartPole", num_envs=[2, 4], num_steps=32, targets=[100], out="unused")

# --------------------------------------------------------------------------- the floor rule


def test_floor_rule_against_a_two_point_distribution():
    # 3 games in 4 score 0, 1 in 4 scores 4: mean 1, variance 3, skewness 2 / sqrt(3).
    returns = [0.0] * 300 + [4.0] * 100
    f = floor_rule(returns, window=20)
    sd = math.sqrt(3 * 400 / 399)  # ddof 1
    skew = 2 / math.sqrt(3)
    z_eff = 5 + (25 - 1) * (skew / math.sqrt(20)) / 6
    assert (f.mean, f.games, f.window, f.z) == (1.0, 400, 20, 5.0)
    assert f.sd == pytest.approx(sd) and f.skew == pytest.approx(skew)
    assert f.z_eff == pytest.approx(z_eff)
    assert f.floor == pytest.approx(1 + z_eff * sd / math.sqrt(20))
    assert f.floor == pytest.approx(3.3394, abs=1e-4)
    # at the floor is refused, above it passes
    assert not f.passes(f.floor) and f.passes(f.floor + 1e-9) and not f.passes(2.5)


def test_left_skew_does_not_lower_the_floor_and_a_constant_return_is_its_own_floor():
    left = floor_rule([4.0] * 300 + [0.0] * 100, window=20)
    assert left.skew < 0 and left.z_eff == 5.0
    assert left.floor == pytest.approx(left.mean + 5 * left.sd / math.sqrt(20))
    const = floor_rule([-500.0] * 50, window=20)
    assert (const.floor, const.sd, const.skew) == (-500.0, 0.0, 0.0)
    assert const.passes(-499) and not const.passes(-500)


@pytest.mark.parametrize("shape", [0.5, 1.0, 4.0])
def test_the_floor_keeps_the_window_crossing_probability_near_its_nominal_level(shape):
    # Per-game returns Gamma(shape, scale 3): skewness 2 / sqrt(shape). The mean of 20 games
    # is Gamma(20 shape, 3 / 20) exactly, so the probability that one window of untrained
    # play reaches the floor is known.
    rng = np.random.default_rng(0)
    f = floor_rule(rng.gamma(shape, 3.0, size=1_000_000), window=20)
    mean, sd = 3.0 * shape, 3.0 * math.sqrt(shape)
    assert f.mean == pytest.approx(mean, rel=0.01) and f.sd == pytest.approx(sd, rel=0.01)
    tail = stats.gamma.sf(f.floor, a=20 * shape, scale=3.0 / 20)
    nominal = normal_tail(FLOOR_Z)
    assert nominal == pytest.approx(2.8665e-7, rel=1e-4) == f.window_tail
    assert 0.25 < tail / nominal < 4, tail
    # Without the skew correction the same z lets untrained play through far more often.
    naive = stats.gamma.sf(mean + FLOOR_Z * sd / math.sqrt(20), a=20 * shape, scale=3.0 / 20)
    assert naive / nominal > 20
    # Over a run: the union bound over its windows.
    assert f.crossing_bound(1000) == pytest.approx(1000 * nominal)
    assert f.crossing_bound(10**9) == 1.0


def test_effective_z_and_bad_inputs():
    assert effective_z(5, 0.0, 20) == 5 and effective_z(5, -1.0, 20) == 5
    assert effective_z(5, 2.0, 20) == pytest.approx(5 + 24 * 2 / (6 * math.sqrt(20)))
    for returns, window in (([1.0], 20), ([1.0, math.nan], 20), ([1.0, 2.0], 0)):
        with pytest.raises(ValueError):
            floor_rule(returns, window)


class _GamesVec:
    """Env i's games last lengths[i] steps; its g-th game returns 10 i + g."""

    def __init__(self, lengths):
        self.lengths = np.asarray(lengths)
        self.num_envs = len(lengths)
        self.t = np.zeros(self.num_envs, dtype=int)

    def reset(self):
        return np.zeros((self.num_envs, 1)), {}

    def step(self, actions):
        assert len(actions) == self.num_envs
        self.t += 1
        done = self.t % self.lengths == 0
        games = self.t // self.lengths - 1
        info = {"episode_done": done,
                "episode_return": np.where(done, 10 * np.arange(self.num_envs) + games, 0.0)}
        return np.zeros((self.num_envs, 1)), np.zeros(self.num_envs), done, done, info


def test_untrained_returns_takes_the_same_number_of_games_from_every_env():
    policy = lambda obs: np.zeros(len(obs), dtype=int)  # noqa: E731
    got = untrained_returns(_GamesVec([1, 2, 5]), policy, games=7)
    # ceil(7 / 3) = 3 games each, in the order they ended; not the 9 that end first
    assert list(got) == [0, 1, 2, 10, 11, 12, 20, 21, 22]
    with pytest.raises(RuntimeError, match="finished only 3 of 6 games in 300 agent steps"):
        untrained_returns(_GamesVec([1, 10**6]), policy, games=6, max_agent_steps=300)


# --------------------------------------------------------------------------- stored floors


def test_reader_of_a_sweep_without_floors_and_a_malformed_file(tmp_path):
    assert read_untrained_floors(tmp_path / "nothing-here") == {}
    assert read_untrained_floors(tmp_path) == {}
    (tmp_path / UNTRAINED_FLOOR_FILE).write_text("not json")
    assert read_untrained_floors(tmp_path) == {}
    (tmp_path / UNTRAINED_FLOOR_FILE).write_text(json.dumps({"envs": {"CartPole": {"floor": 1}}}))
    with pytest.raises(ValueError, match="the entry of CartPole is not a floor.*--floor-only"):
        read_untrained_floors(tmp_path)


FAKE = UntrainedFloor(floor=37.5, mean=21.5, sd=10.8, skew=1.9, games=208, window=20, z=5.0,
                      seed=0)


@pytest.fixture
def fake_floor(monkeypatch):
    """measure_untrained_floor replaced by FAKE; returns the list of envs it measured."""
    measured = []

    def measure(spec, env):
        measured.append(env)
        return FAKE

    monkeypatch.setattr(rl.sweeps.protocol, "measure_untrained_floor", measure)
    return measured


def test_a_target_below_the_floor_is_refused_before_anything_runs(tmp_path, fake_floor):
    spec = parse_spec({**BASE, "targets": [20, 37.5, 100], "out": str(tmp_path)})
    with pytest.raises(TargetBelowFloorError) as info:
        run_sweep(spec, executor=_NeverRun())
    msg = str(info.value)
    assert isinstance(info.value, SweepSpecError) and len(info.value.problems) == 1
    line = info.value.problems[0]
    assert line.startswith("target(s) 20, 37.5 on CartPole at or below the untrained-play "
                           "floor 37.5 (an untrained network scores 21.5 per game, sd 10.8, "
                           "over 208 games; floor = mean + ")
    assert "raise every target above 37.5, or pass --allow-target-below-floor" in msg
    assert not (tmp_path / "runs").exists() and not (tmp_path / "sweep.json").exists()
    # The floor was measured once and stored; a second attempt reads it.
    assert fake_floor == ["CartPole"]
    assert read_untrained_floors(tmp_path) == {"CartPole": FAKE}
    with pytest.raises(TargetBelowFloorError):
        check_untrained_floor(spec)
    assert fake_floor == ["CartPole"]
    stored = json.loads((tmp_path / UNTRAINED_FLOOR_FILE).read_text())
    assert stored["envs"]["CartPole"]["settings"]["window"] == 20
    assert "allowed_below_floor" not in stored


def test_allowing_a_target_below_the_floor_is_recorded(tmp_path, fake_floor):
    spec = parse_spec({**BASE, "targets": [20, 100], "out": str(tmp_path),
                       "allow_target_below_floor": True})
    logged = []
    assert check_untrained_floor(spec, log=logged.append) == {"CartPole": FAKE}
    stored = json.loads((tmp_path / UNTRAINED_FLOOR_FILE).read_text())
    assert [(a["env"], a["target"], a["floor"]) for a in stored["allowed_below_floor"]] == \
        [("CartPole", 20.0, 37.5)]
    assert any(m.startswith("allowed by allow_target_below_floor: target(s) 20 on CartPole")
               for m in logged)
    # The key round-trips through sweep.json like any other.
    assert parse_spec(spec_to_raw(spec)).allow_target_below_floor is True


def test_other_run_settings_measure_the_floor_again(tmp_path, fake_floor):
    spec = parse_spec({**BASE, "out": str(tmp_path)})
    untrained_floors(spec)
    untrained_floors(spec)
    assert fake_floor == ["CartPole"]
    longer = parse_spec({**BASE, "out": str(tmp_path), "train": {"return_window": 50}})
    assert untrained_floors(longer, measure=False) == {}  # stored for another window
    untrained_floors(longer)
    assert fake_floor == ["CartPole", "CartPole"]


def test_cartpole_floor_measured_and_the_study_targets_pass(tmp_path):
    from rl.study.settings import SWEEP_TARGETS

    spec = parse_spec({**BASE, "targets": [20], "out": str(tmp_path)})
    with pytest.raises(TargetBelowFloorError, match="target.s. 20 on CartPole"):
        check_untrained_floor(spec)
    f = read_untrained_floors(tmp_path)["CartPole"]
    # Untrained CartPole games last about 20 steps (+1 per step), right-skewed.
    assert 15 < f.mean < 30 and 5 < f.sd < 20 and f.skew > 0.5 and f.games >= 200
    assert f.mean < f.floor < min(SWEEP_TARGETS["CartPole"])
    assert f.floor == pytest.approx(f.mean + f.z_eff * f.sd / math.sqrt(f.window))


def test_floor_only_and_dry_run_commands(tmp_path, fake_floor, capsys):
    from rl.cli import main

    spec = tmp_path / "spec.toml"
    spec.write_text(f'env = "CartPole"\nnum_envs = [2, 4]\nnum_steps = 32\ntargets = [20, 100]'
                    f'\nout = "{(tmp_path / "out").as_posix()}"\n')
    assert main(["sweep", str(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "untrained-play floor of CartPole: not measured yet" in out and fake_floor == []
    assert main(["sweep", str(spec), "--floor-only"]) == 1
    got = capsys.readouterr()
    assert "untrained-play floor of CartPole: 37.5" in got.out
    assert "refused:" in got.err and "target(s) 20 on CartPole" in got.err
    assert fake_floor == ["CartPole"] and not (tmp_path / "out" / "runs").exists()
    assert main(["sweep", str(spec), "--dry-run"]) == 0
    assert "would be refused" in capsys.readouterr().err
    assert main(["sweep", str(spec), "--targets", "50,100", "--floor-only"]) == 0
    assert main(["sweep", str(spec), "--quiet"]) == 2  # refused, one error line
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "--allow-target-below-floor" in err


class _NeverRun:
    def run(self, plans, on_done):
        raise AssertionError("nothing may run")


# --------------------------------------------------------------------------- stage 2: spec


@pytest.mark.parametrize("changes, expected", [
    (dict(best_lr_seeds=2, seeds=2, lrs=[1e-3, 2e-3]),
     "best_lr_seeds = 2 must exceed the number of grid seeds (2: seeds = [0, 1])"),
    (dict(best_lr_seeds=1), "best_lr_seeds must be a whole number of seeds >= 2"),
    (dict(best_lr_seeds=4.5, lrs=[1e-3, 2e-3]), "best_lr_seeds must be a whole number"),
    (dict(best_lr_seeds=5, lrs=[1e-3]), "best_lr_seeds needs a learning-rate grid"),
    (dict(best_lr_seeds=5), "best_lr_seeds needs a learning-rate grid (lrs with 2 or more "
                            "values, got the preset lr)"),
    (dict(best_lr_seeds=5, lrs=[1e-3, 2e-3], scheduler="pbt", backend="ray"),
     "does not apply to scheduler = 'pbt'"),
    (dict(allow_target_below_floor="yes"), "allow_target_below_floor must be true or false"),
])
def test_stage_two_spec_errors(changes, expected):
    with pytest.raises(SweepSpecError) as info:
        parse_spec({**BASE, **changes})
    assert expected in str(info.value)


# --------------------------------------------------------------------------- stage 2: plan

GRID = dict(BASE, num_envs=[2, 4], lrs=[1e-3, 2e-3, 4e-3], seeds=2, best_lr_seeds=5,
            targets=[50], train={"return_window": 1})


def _choice(env, b, lr, reason=""):
    return BestLr(env=env, batch_size=b, lr=lr, target=50.0, grid_lrs=(1e-3, 2e-3, 4e-3),
                  grid_seeds=(0, 1), reason=reason)


def test_stage_two_plans_the_extra_seeds_at_the_recorded_lr(tmp_path):
    spec = parse_spec({**GRID, "out": str(tmp_path)})
    grid = plan_runs(spec)
    assert len(grid) == 2 * 3 * 2  # nothing recorded: the grid alone
    add_best_lrs(tmp_path, [_choice("CartPole", 64, 2e-3),
                            _choice("CartPole", 128, None, "no lr reached the target")])
    plans = plan_runs(spec)
    extra = [p for p in plans if p.name not in {g.name for g in grid}]
    assert [(p.rollout_batch_size, p.lr, p.seed) for p in extra] == \
        [(64, 2e-3, 2), (64, 2e-3, 3), (64, 2e-3, 4)]
    assert extra[0].name == "CartPole-b64-n2x32-lr0.002-s2"
    # ordinary runs: in the order of the plan (env, B, lr, seed), same settings but the seed
    at = [p.name for p in plans if p.rollout_batch_size == 64 and p.lr == 2e-3]
    assert at == [f"CartPole-b64-n2x32-lr0.002-s{s}" for s in range(5)]
    assert extra[0].ppo == grid[2].ppo and extra[0].train["seed"] == 2
    # without the stage-2 key the record is not used
    plain = parse_spec({**GRID, "best_lr_seeds": None, "out": str(tmp_path)})
    assert len(plan_runs(plain)) == len(grid)
    # a grid that no longer holds the recorded lr
    moved = parse_spec({**GRID, "lrs": [1e-3, 4e-3], "out": str(tmp_path)})
    with pytest.raises(SweepStateError, match="records lr 0.002 for batch size 64 on CartPole"):
        plan_runs(moved)


def test_a_recorded_choice_is_never_changed(tmp_path):
    add_best_lrs(tmp_path, [_choice("CartPole", 64, 2e-3)])
    before = (tmp_path / BEST_LR_FILE).read_bytes()
    add_best_lrs(tmp_path, [_choice("CartPole", 64, 2e-3)])  # the same: fine
    with pytest.raises(ValueError, match="already records a choice for CartPole B=64"):
        add_best_lrs(tmp_path, [_choice("CartPole", 64, 4e-3)])
    assert (tmp_path / BEST_LR_FILE).read_bytes() == before
    assert read_best_lrs(tmp_path) == {("CartPole", 64): _choice("CartPole", 64, 2e-3)}
    assert read_best_lrs(tmp_path / "none") == {}
    assert _choice("CartPole", 64, 4e-3).at_edge and not _choice("CartPole", 64, 2e-3).at_edge


# --------------------------------------------------------------------------- stage 2: runs

# Return per iteration by lr at each batch size (target 50, 30 iterations): 2e-3 is best at
# B = 64, 4e-3 at 128 (at the edge of the grid); at 1e-3 a run never gets there.
SPEED = {(64, 1e-3): 0.5, (64, 2e-3): 5.0, (64, 4e-3): 2.5,
         (128, 1e-3): 0.5, (128, 2e-3): 2.5, (128, 4e-3): 6.0}


def fake_train(plan, speed=None):
    """A finished run whose return grows by SPEED per iteration (seed s: 1 + s/10 slower)."""
    v = (speed or SPEED)[(plan.rollout_batch_size, plan.lr)] / (1 + plan.seed / 10)
    run = RunDir.create(plan.run_dir, plan.stored_config())
    for i in range(1, 31):
        run.append_metrics(dict(iteration=i, agent_steps=i * plan.rollout_batch_size,
                                episodes_total=i, return_recent=v * i))
    run.write_status("finished", message="reached target")
    run.close()


class FakeExecutor:
    """Trains by ``fake_train`` (at ``speed``, default SPEED); stops (KeyboardInterrupt)
    after ``stop_after`` runs."""

    def __init__(self, stop_after=None, speed=None):
        self.calls: list[list[str]] = []
        self.stop_after = stop_after
        self.speed = speed

    def run(self, plans, on_done):
        self.calls.append([p.name for p in plans])
        for p in plans:
            if self.stop_after is not None and self.stop_after <= 0:
                raise KeyboardInterrupt
            fake_train(p, self.speed)
            on_done(p, dict(status="finished", action="new", message="reached target"))
            if self.stop_after is not None:
                self.stop_after -= 1


def _best_per_batch(runs):
    from rl.cli.sweep import choose_best_lrs

    return choose_best_lrs(runs)


def test_one_sweep_runs_both_stages_and_fit_sees_them(tmp_path, fake_floor):
    spec = parse_spec({**GRID, "targets": [40, 50], "out": str(tmp_path)})
    ex, logged = FakeExecutor(), []
    table = run_sweep(spec, executor=ex, log=logged.append, choose_lr=_best_per_batch)
    assert [len(c) for c in ex.calls] == [12, 6]
    assert ex.calls[1] == [f"CartPole-b64-n2x32-lr0.002-s{s}" for s in (2, 3, 4)] + \
        [f"CartPole-b128-n4x32-lr0.004-s{s}" for s in (2, 3, 4)]
    assert read_best_lrs(tmp_path) == {
        ("CartPole", 64): BestLr("CartPole", 64, 2e-3, 50.0, (1e-3, 2e-3, 4e-3), (0, 1)),
        ("CartPole", 128): BestLr("CartPole", 128, 4e-3, 50.0, (1e-3, 2e-3, 4e-3), (0, 1)),
    }
    assert any("B=128: best lr 0.004" in m and "at the edge of the grid" in m for m in logged)
    assert len(table) == 18 and (table["status"] == "finished").all()
    # The stored spec plans them too (rlscale fit, a restart): ordinary runs.
    assert [p.name for p in plan_runs(stored_spec(tmp_path))] == list(table["run"])
    assert json.loads((tmp_path / "sweep.json").read_text())["runs"][-1]["seed"] == 4
    events = [e for e in read_events(tmp_path) if e["event"] == "best_lr"]
    assert [(e["batch_size"], e["lr"]) for e in events] == [(64, 2e-3), (128, 4e-3)]
    # A restart trains nothing and keeps the choice.
    again = FakeExecutor()
    run_sweep(spec, executor=again, choose_lr=_best_per_batch)
    assert again.calls == [[]]


def test_an_interrupted_sweep_continues_either_stage(tmp_path, fake_floor):
    spec = parse_spec({**GRID, "out": str(tmp_path)})
    with pytest.raises(KeyboardInterrupt):  # stage 1 stops after 7 of its 12 runs
        run_sweep(spec, executor=FakeExecutor(stop_after=7), choose_lr=_best_per_batch)
    assert read_best_lrs(tmp_path) == {}
    ex = FakeExecutor(stop_after=5 + 1)  # the rest of stage 1, then one stage-2 run
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, executor=ex, choose_lr=_best_per_batch)
    assert [len(c) for c in ex.calls] == [5, 6]
    assert set(read_best_lrs(tmp_path)) == {("CartPole", 64), ("CartPole", 128)}
    ex = FakeExecutor()
    table = run_sweep(spec, executor=ex, choose_lr=_best_per_batch)
    assert [len(c) for c in ex.calls] == [5]  # the stage-2 runs left, in one go
    assert len(table) == 18 and (table["status"] == "finished").all()


def test_choice_waits_for_a_settled_grid_and_is_kept_when_results_change(tmp_path):
    spec = parse_spec({**GRID, "out": str(tmp_path)})
    grid = plan_runs(spec)
    for p in grid:
        if not (p.rollout_batch_size == 128 and p.seed == 1 and p.lr == 4e-3):
            fake_train(p)
    logged = []
    new = choose_stage_two(spec, results_table(grid, spec.targets), _best_per_batch,
                           log=logged.append)
    assert [(c.batch_size, c.lr) for c in new] == [(64, 2e-3)]  # B = 128 still pending
    before = (tmp_path / BEST_LR_FILE).read_bytes()
    # Other results now favour 4e-3 at B = 64: the record stays, and says so.
    flipped = {**SPEED, (64, 4e-3): 8.0}
    for p in grid:
        if p.rollout_batch_size == 64 and p.lr == 4e-3:
            shutil.rmtree(p.run_dir)
            fake_train(p, flipped)
    new = choose_stage_two(spec, results_table(grid, spec.targets), _best_per_batch,
                           log=logged.append)
    assert new == [] and (tmp_path / BEST_LR_FILE).read_bytes() == before
    assert any("kept the recorded lr 0.002" in m and "would now choose 0.004" in m
               for m in logged)


def test_a_batch_size_with_no_eligible_lr_gets_no_stage_two(tmp_path, fake_floor):
    spec = parse_spec({**GRID, "targets": [400], "out": str(tmp_path)})
    ex, logged = FakeExecutor(), []
    table = run_sweep(spec, executor=ex, log=logged.append, choose_lr=_best_per_batch)
    assert len(ex.calls) == 1 and len(table) == 12
    assert {c.lr for c in read_best_lrs(tmp_path).values()} == {None}
    assert sum("no stage-2 runs, no lr of the grid is eligible" in m for m in logged) == 2


def test_without_a_chooser_stage_two_is_left_for_later(tmp_path, fake_floor):
    spec = parse_spec({**GRID, "out": str(tmp_path)})
    logged = []
    run_sweep(spec, executor=FakeExecutor(), log=logged.append)
    assert read_best_lrs(tmp_path) == {} and any("no lr chooser" in m for m in logged)


def test_dry_run_lists_the_stage_two_plan(tmp_path, fake_floor, capsys):
    from rl.cli import main

    spec = tmp_path / "spec.toml"
    spec.write_text(
        'env = "CartPole"\nnum_envs = [2, 4]\nnum_steps = 32\nlrs = [1e-3, 2e-3, 4e-3]\n'
        'seeds = 2\ntargets = [50]\n' f'out = "{(tmp_path / "out").as_posix()}"\n')
    assert main(["sweep", str(spec), "--best-lr-seeds", "5", "--dry-run"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "12 runs into" in out
    assert "stage 2 (best_lr_seeds = 5): seeds 2, 3, 4 at each batch size's best lr" in out
    assert "chosen for 0 of 2 batch sizes so far" in out
    assert main(["sweep", str(spec), "--best-lr-seeds", "2", "--dry-run"]) == 2
    assert "must exceed the number of grid seeds" in capsys.readouterr().err


def test_results_of_stage_two_feed_the_fit(tmp_path, fake_floor):
    from rl.analysis.fit import best_per_batch

    spec = parse_spec({**GRID, "targets": [50], "out": str(tmp_path)})
    table = run_sweep(spec, executor=FakeExecutor(), choose_lr=_best_per_batch)
    from rl.sweeps.results import long_results

    per_batch, per_seed = best_per_batch(long_results(table))
    assert list(per_batch["best_lr"]) == [2e-3, 4e-3]
    assert list(per_batch["n_seeds"]) == [5, 5]
    assert isinstance(per_seed, pd.DataFrame) and len(per_seed) == 10


def test_the_protocol_example_spec(tmp_path):
    from rl.sweeps.spec import load_spec

    root = Path(__file__).resolve().parents[3]
    spec = load_spec(root / "examples/sweeps/minatar-protocol.toml", {"out": str(tmp_path)})
    assert spec.best_lr_seeds == 5 and spec.seeds == [0, 1] and spec.lr_rule == "sqrt"
    plans = plan_runs(spec)
    assert len(plans) == 5 * 3 * 2
    for b in (256, 1024, 4096):
        lrs = sorted({p.lr for p in plans if p.rollout_batch_size == b})
        ref = 1e-3 * math.sqrt(b / 1024)
        assert lrs == pytest.approx([0.5 * ref, ref, 2 * ref], rel=1e-5)
    assert min(spec.targets) > 1.26  # the measured floor of MinAtar-Breakout (docs/sweeps.md)


def test_an_extended_grid_chooses_again_where_the_choice_sat_at_its_edge(tmp_path, fake_floor):
    # B = 128 chose 4e-3, the top of the grid; the grid is then extended by 8e-3, which is
    # faster there. Once the new runs end, B = 128 is chosen again (8e-3, stage-2 seeds
    # there), the first choice kept under "superseded"; B = 64 (2e-3, inside) chooses again
    # on its extended grid too, and stays at 2e-3.
    speed = {**SPEED, (64, 8e-3): 1.0, (128, 8e-3): 9.0}
    spec = parse_spec({**GRID, "out": str(tmp_path)})
    ex = FakeExecutor()
    run_sweep(spec, executor=ex, choose_lr=_best_per_batch)
    assert read_best_lrs(tmp_path)[("CartPole", 128)].lr == 4e-3

    wider = parse_spec({**GRID, "lrs": [1e-3, 2e-3, 4e-3, 8e-3], "out": str(tmp_path)})
    logged, ex = [], FakeExecutor(speed=speed)
    table = run_sweep(wider, executor=ex, log=logged.append, choose_lr=_best_per_batch)
    choices = read_best_lrs(tmp_path)
    assert choices[("CartPole", 128)].lr == 8e-3 and choices[("CartPole", 64)].lr == 2e-3
    assert any("B=128: the grid was extended" in m and "now 0.008" in m for m in logged)
    doc = json.loads((tmp_path / BEST_LR_FILE).read_text())
    assert [(c["batch_size"], c["lr"]) for c in doc["superseded"]] == [(64, 2e-3), (128, 4e-3)]
    assert any("B=64: the grid was extended" in m and "still 0.002" in m for m in logged)
    assert ex.calls[0] == [f"CartPole-b{b}-n{b // 32}x32-lr0.008-s{s}" for b in (64, 128)
                           for s in (0, 1)]
    assert ex.calls[1] == [f"CartPole-b128-n4x32-lr0.008-s{s}" for s in (2, 3, 4)]
    assert (table["status"] == "finished").all()
    # A second choice on the same grid is still refused.
    with pytest.raises(ValueError, match="never changed"):
        add_best_lrs(tmp_path, [BestLr("CartPole", 128, 2e-3, 50.0, (1e-3, 2e-3, 4e-3, 8e-3),
                                       (0, 1))])


def test_a_grid_extended_before_its_stage_two_ran_chooses_again_first(tmp_path, fake_floor):
    """The extension arrives after B = 128's choice (4e-3, the grid's top) but before its
    stage-2 seeds ran (the sweep was stopped): no seeds at the stale choice; the extended
    grid runs first and chooses again (4e-3 still: 8e-3 is slower), then stage 2 adds its
    seeds there. B = 64, not extended, runs its stage 2 meanwhile."""
    spec = parse_spec({**GRID, "out": str(tmp_path)})
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, executor=FakeExecutor(stop_after=12), choose_lr=_best_per_batch)
    assert read_best_lrs(tmp_path)[("CartPole", 128)].lr == 4e-3
    speed = {**SPEED, (128, 8e-3): 1.0}

    wider = parse_spec({**GRID, "extra_lrs": {"128": [8e-3]}, "out": str(tmp_path)})
    assert [p.name for p in plan_runs(wider) if p.rollout_batch_size == 128 and p.seed > 1] == []
    logged, ex = [], FakeExecutor(speed=speed)
    run_sweep(wider, executor=ex, log=logged.append, choose_lr=_best_per_batch)
    assert ex.calls[0] == [f"CartPole-b64-n2x32-lr0.002-s{s}" for s in (2, 3, 4)] + \
        [f"CartPole-b128-n4x32-lr0.008-s{s}" for s in (0, 1)]
    assert ex.calls[1] == [f"CartPole-b128-n4x32-lr0.004-s{s}" for s in (2, 3, 4)]
    choice = read_best_lrs(tmp_path)[("CartPole", 128)]
    assert choice.lr == 4e-3 and choice.grid_lrs == (1e-3, 2e-3, 4e-3, 8e-3)
    assert any("B=128: the grid was extended" in m and "still 0.004" in m for m in logged)


def test_a_recorded_choice_plans_its_seeds_once_the_extended_grid_has_ended(tmp_path,
                                                                            fake_floor):
    """A sweep whose grid grew and whose new runs all ended, with best_lr.json still holding
    the choice made on the smaller grid (as sweeps recorded before the rule above do, or
    until the sweep chooses again): the stage-2 seeds of that choice stay in the plan, so
    fit and a study read the same runs as before."""
    spec = parse_spec({**GRID, "out": str(tmp_path)})
    run_sweep(spec, executor=FakeExecutor(), choose_lr=_best_per_batch)
    wider = parse_spec({**GRID, "extra_lrs": {"128": [8e-3]}, "out": str(tmp_path)})
    stage_two = [f"CartPole-b128-n4x32-lr0.004-s{s}" for s in (2, 3, 4)]
    names = [p.name for p in plan_runs(wider)]
    assert not set(stage_two) & set(names)  # the new grid runs have not run: waiting
    for p in plan_runs(wider):
        if p.lr == 8e-3:
            fake_train(p, {**SPEED, (128, 8e-3): 1.0})
    assert set(stage_two) <= {p.name for p in plan_runs(wider)}


def test_extra_lrs_extend_the_grid_of_one_batch_size_only(tmp_path, fake_floor):
    """``[extra_lrs]``: the grid grows where the choice sat at its edge (B = 128) and nowhere
    else: no runs at 8e-3 for B = 64, unlike extending ``lrs``."""
    speed = {**SPEED, (128, 8e-3): 9.0}
    spec = parse_spec({**GRID, "out": str(tmp_path)})
    run_sweep(spec, executor=FakeExecutor(), choose_lr=_best_per_batch)
    assert read_best_lrs(tmp_path)[("CartPole", 128)].lr == 4e-3

    wider = parse_spec({**GRID, "extra_lrs": {"128": [8e-3]}, "out": str(tmp_path)})
    assert parse_spec(spec_to_raw(wider)) == wider  # sweep.json keeps it
    ex = FakeExecutor(speed=speed)
    run_sweep(wider, executor=ex, choose_lr=_best_per_batch)
    assert ex.calls[0] == [f"CartPole-b128-n4x32-lr0.008-s{s}" for s in (0, 1)]
    assert ex.calls[1] == [f"CartPole-b128-n4x32-lr0.008-s{s}" for s in (2, 3, 4)]
    choices = read_best_lrs(tmp_path)
    assert choices[("CartPole", 128)].lr == 8e-3
    assert choices[("CartPole", 128)].grid_lrs == (1e-3, 2e-3, 4e-3, 8e-3)
    assert choices[("CartPole", 64)].lr == 2e-3
    assert choices[("CartPole", 64)].grid_lrs == (1e-3, 2e-3, 4e-3)


@pytest.mark.parametrize("extra, expected", [
    ({"128": [2e-3]}, "extra_lrs 0.002 already in the grid"),
    ({"96": [8e-3]}, "extra_lrs names batch size(s) 96, which CartPole's sweep does not have"),
    ({"big": [8e-3]}, "extra_lrs: 'big' is not a batch size"),
    ({"128": [0]}, "extra_lrs.128: [0] must be a non-empty list of positive learning rates"),
])
def test_extra_lrs_errors(tmp_path, extra, expected):
    with pytest.raises(SweepSpecError, match=re.escape(expected)):
        parse_spec({**GRID, "extra_lrs": extra, "out": str(tmp_path)})
