"""Supervised critical-batch sweeps (docs/sweeps.md, "Supervised sweeps"): the spec of a
supervised task, its plan, a tiny sweep end to end through the sweep machinery (floor, both
stages, results table, restart) and the fit on it."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from rl.analysis.sweep_fits import fit_sweep
from rl.measure.warmup import WARMUP_ITERATIONS
from rl.runs.metrics import load_metrics
from rl.sweeps import protocol
from rl.sweeps.executors import run_one, run_sweep
from rl.sweeps.settings import SweepSpecError
from rl.sweeps.spec import parse_spec, plan_runs, spec_to_raw, stored_spec
from rl.sweeps.state import classify_run, read_best_lrs, read_untrained_floors

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = dict(env="digits-mlp", batch_sizes=[16, 64, 256], lrs=[0.05, 0.1], lr_rule="sqrt",
            base_batch_size=64, seeds=2, best_lr_seeds=3, targets=[-1.0, -0.15],
            budget=8_000, supervised={"gns_every": 2})


def problems_of(**changes) -> str:
    raw = {**SPEC, "out": "x", **changes}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(SweepSpecError) as exc:
        parse_spec(raw)
    return str(exc.value)


@pytest.mark.parametrize("changes, expected", [
    (dict(env=["digits-mlp", "CartPole"]), "mixes supervised tasks"),
    (dict(num_envs=[1, 2]), "num_envs does not apply to supervised tasks"),
    (dict(batch_sizes=None), "batch_sizes is missing"),
    (dict(batch_sizes=[16, 16]), "duplicate"),
    (dict(targets=[-0.5, 0.1]), "target(s) 0.1 can never be reached"),
    (dict(targets=[0.5, 1.5], supervised={"progress": "test_acc"}), "1.5 are no test accuracy"),
    (dict(supervised={"batch_size": 4}), "supervised.batch_size is set by the sweep"),
    (dict(supervised={"sampling": "epochs"}), "supervised.sampling is set by the sweep"),
    (dict(supervised={"hiden": 4}), "did you mean 'hidden'"),
    (dict(supervised={"progress": "accuracy"}), "supervised.progress = 'accuracy' has the wrong"),
    (dict(ppo={"num_epochs": 2}), "ppo does not apply"),
    (dict(scheduler="pbt", backend="ray"), "a supervised sweep is a grid"),
    (dict(budget=100), "budget 100 examples is less than one batch of 256"),
])
def test_spec_errors(changes, expected):
    assert expected in problems_of(**changes)


def test_batch_sizes_are_for_supervised_tasks():
    with pytest.raises(SweepSpecError, match="batch_sizes is for supervised tasks"):
        parse_spec(dict(env="CartPole", num_envs=[1, 2], targets=[50], out="x",
                        batch_sizes=[8]))


def test_plan_names_configs_and_round_trip(tmp_path):
    spec = parse_spec({**SPEC, "out": str(tmp_path)})
    assert spec.is_supervised and spec.num_envs == [] and spec.batch_sizes == [16, 64, 256]
    plans = plan_runs(spec)
    assert len(plans) == 12
    first = plans[0]
    assert first.name == "digits-mlp-b16-lr0.025-s0" and first.kind == "supervised"
    assert (first.num_envs, first.num_steps, first.rollout_batch_size) == (16, 1, 16)
    cfg = first.supervised_config()
    assert (cfg.model, cfg.batch_size, cfg.lr, cfg.seed) == ("mlp", 16, 0.025, 0)
    assert (cfg.target, cfg.total_steps, cfg.sampling) == (-0.15, 8_000 // 16, "iid")
    assert (cfg.gns_every, cfg.eval_per_octave) == (2, 32)  # table < sweep default
    assert cfg.diverge_factor == 10.0
    assert first.target == -0.15 and first.return_window == 1 and first.ppo == {}
    with pytest.raises(ValueError, match="supervised run"):
        first.configs()
    assert plans[-1].supervised_config().lr == pytest.approx(0.2)  # 0.1 sqrt(256 / 64)
    cnn = plan_runs(parse_spec({**SPEC, "env": "digits-cnn", "out": str(tmp_path)}))[0]
    assert cnn.supervised_config().model == "cnn"
    again = parse_spec({**spec_to_raw(spec)})
    assert again == spec


def _in_process():
    """An executor that runs each plan in this process (``run_one``: the real dispatch)."""

    class InProcess:
        def run(self, plans, on_done):
            for p in plans:
                on_done(p, run_one(p.to_dict()))

    return InProcess()


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("supervised-sweep")
    spec = parse_spec({**SPEC, "out": str(out)})
    mp = pytest.MonkeyPatch()
    mp.setattr(protocol, "FLOOR_GAMES", 10)  # the floor's rule, on fewer networks
    try:
        from rl.cli.sweep import choose_best_lrs

        table = run_sweep(spec, executor=_in_process(), choose_lr=choose_best_lrs)
    finally:
        mp.undo()
    return spec, table


def test_tiny_sweep_runs_both_stages_through_the_machinery(tiny_sweep):
    spec, table = tiny_sweep
    assert len(table) == 15 and (table["status"] == "finished").all()
    chosen = read_best_lrs(spec.out)
    assert sorted(b for _, b in chosen) == [16, 64, 256]
    for (_, b), c in chosen.items():
        extra = table[(table["rollout_batch_size"] == b) & (table["seed"] == 2)]
        assert list(extra["lr"]) == [c.lr]
    floor = read_untrained_floors(spec.out)["digits-mlp"]
    assert floor.games == 10 and floor.window == 1
    assert abs(floor.mean + math.log(10)) < 0.1 and floor.floor < -1.0  # targets pass
    assert (table["gns_split"] == "iid").all()
    # A restart trains nothing; every run is finished for classify_run.
    assert all(classify_run(p)[0] == "finished" for p in plan_runs(spec))


def test_results_rows_are_the_runs_own_steps_examples_and_noise_scale(tiny_sweep):
    spec, table = tiny_sweep
    for plan in plan_runs(spec)[::4]:
        row = table.set_index("run").loc[plan.name]
        m = load_metrics(plan.run_dir)
        assert row["status"] == "finished" and row["message"] == "reached target"
        for target in spec.targets:
            hit = m[-m["train_loss"] >= target]
            assert row[f"iterations_to_target_{target:g}"] == hit["step"].iloc[0]
            assert row[f"agent_steps_to_target_{target:g}"] == \
                hit["step"].iloc[0] * plan.rollout_batch_size
        # Run-averaged B_simple: mean tr(Sigma) / mean |G|^2 over the measurements after
        # WARMUP_ITERATIONS optimizer steps (the warm-up rule), until the run stopped.
        counted = m[(m["step"] >= WARMUP_ITERATIONS) & m["g2"].notna()]
        assert 0 < len(counted) < m["g2"].notna().sum()  # steps 0, 2, ..., 8 left out
        assert row["b_simple_total"] == pytest.approx(
            counted["trace_sigma"].mean() / counted["g2"].mean())
        assert math.isnan(row["b_simple_policy"])
        assert row["final_return_recent"] >= max(spec.targets)


def test_fit_sees_steps_and_examples(tiny_sweep):
    spec, table = tiny_sweep
    fits, per_batch = fit_sweep(table, n_boot=50)
    assert sorted(fits["target"]) == sorted(spec.targets)
    assert (fits["n_batch_sizes"] == 3).all()
    assert np.isfinite(fits["b_simple_total"]).all() and (fits["b_simple_runs"] == 9).all()
    reached = per_batch[per_batch["reached"].astype(bool)]
    # E = B x S per seed, so the medians over an odd number of seeds agree exactly.
    assert np.allclose(reached["e_median"], reached["rollout_batch_size"] * reached["s_median"])
    # 5 seeds at each best lr (2 grid seeds + 3 at the choice).
    assert (reached["n_seeds"] == 3).all()


def test_an_interrupted_supervised_run_starts_over(tiny_sweep, tmp_path):
    spec, _ = tiny_sweep
    plan = plan_runs(spec)[0]
    status = json.loads((pd.io.common.Path(plan.run_dir) / "status.json").read_text())
    assert status["state"] == "finished"
    spec2 = parse_spec({**SPEC, "out": str(tmp_path), "batch_sizes": [64]})
    p2 = plan_runs(spec2)[0]
    first = run_one(p2.to_dict())
    rows = load_metrics(p2.run_dir)
    # As if killed by Ctrl-C: the run is marked interrupted, then the sweep resumes it.
    (pd.io.common.Path(p2.run_dir) / "status.json").write_text(json.dumps(
        {"state": "failed", "message": "KeyboardInterrupt: "}))
    assert classify_run(p2)[0] == "resume"
    again = run_one(p2.to_dict())
    assert again["status"] == "finished" and again["iterations"] == first["iterations"]
    pd.testing.assert_frame_equal(load_metrics(p2.run_dir).drop(columns="seconds",
                                                                 errors="ignore"),
                                  rows.drop(columns="seconds", errors="ignore"))
    assert stored_spec(spec.out).batch_sizes == spec.batch_sizes
