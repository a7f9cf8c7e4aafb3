"""Population based training: spec validation, the trainer's hyperparameter override, a
member continued from another member's checkpoint (no Ray), and a tiny CartPole
population on a local Ray instance (PopulationBasedTraining of Ray Tune)."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agents import PPOConfig
from rl.cli import main
from rl.measure import warmup
from rl.measure.warmup import WARMUP_ITERATIONS
from rl.runs.metrics import load_metrics
from rl.sweeps.pbt import (
    PBT_COLUMNS,
    PBTConfig,
    initial_values,
    parse_param_flag,
    pbt_table,
    plan_members,
    run_member,
    write_pbt_outputs,
)
from rl.sweeps.settings import SweepSpecError, SweepStateError
from rl.sweeps.spec import load_spec, parse_spec, spec_to_raw
from rl.sweeps.state import read_events
from rl.train import loop as loop_mod
from rl.train.config import PRESETS, TIMING_COLUMNS, PPOOverride, TrainConfig
from rl.train.launch import train

CLASSIC_TRAIN, CLASSIC_PPO = PRESETS["classic"]
HYPER = {"learning_rate": {"log": [3e-4, 3e-3]}, "ent_coef": {"values": [0.0, 0.001, 0.01]},
         "clip_coef": {"uniform": [0.1, 0.3]}}


def pbt_raw(out, **changes):
    raw = dict(env="CartPole", num_envs=8, num_steps=16, budget=128 * 12, backend="ray",
               scheduler="pbt", out=str(out), train={"gns_every": 2},
               pbt={"population": 2, "perturbation_interval": 3, "hyperparams": HYPER})
    raw.update(changes)
    return {k: v for k, v in raw.items() if v is not None}




def problems_of(**changes) -> str:
    with pytest.raises(SweepSpecError) as info:
        parse_spec(pbt_raw("unused", **changes))
    return str(info.value)


# --------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, expected", [
    (dict(backend="local"), "set backend = 'ray' (flag --backend ray)"),
    (dict(backend=None), "set backend = 'ray'"),
    (dict(pbt={"population": 1}), "pbt.population must be an integer >= 2"),
    (dict(pbt={"population": 2.5}), "pbt.population must be an integer >= 2"),
    (dict(pbt={"hyperparams": {"entropy": {"values": [0.0]}}}),
     "pbt.hyperparams.entropy: unknown hyperparameter; PBT perturbs learning_rate, ent_coef, "
     "clip_coef"),
    (dict(pbt={"hyperparams": {"clip_coefs": {"values": [0.2]}}}), "did you mean 'clip_coef'"),
    (dict(pbt={"hyperparams": {"clip_coef": {"uniform": [0.3, 0.3]}}}),
     "pbt.hyperparams.clip_coef.uniform = [0.3, 0.3] is an empty range"),
    (dict(pbt={"hyperparams": {"learning_rate": {"log": [1e-2, 1e-4]}}}), "is an empty range"),
    (dict(pbt={"hyperparams": {"ent_coef": {"values": []}}}),
     "pbt.hyperparams.ent_coef.values is empty"),
    (dict(pbt={"hyperparams": {}}), "must be a table naming at least one of"),
    (dict(pbt={"hyperparams": {"ent_coef": {"log": [0.0, 0.01]}}}), "log needs low > 0"),
    (dict(pbt={"hyperparams": {"clip_coef": {"uniform": [-0.1, 0.3]}}}), "clip_coef must be > 0"),
    (dict(pbt={"hyperparams": {"clip_coef": [0.1, 0.3]}}), "give a log-uniform range"),
    (dict(pbt={"quantile_fraction": 0.75}), "pbt.quantile_fraction must be in (0, 0.5]"),
    (dict(pbt={"resample_probability": -0.1}), "pbt.resample_probability must be in [0, 1]"),
    (dict(pbt={"perturbation_interval": 0}), "pbt.perturbation_interval must be a positive"),
    (dict(pbt={"synchronous": "yes"}), "pbt.synchronous must be true or false"),
    (dict(pbt={"metric": "return"}), "pbt.metric must be one of return_recent, return_mean"),
    (dict(pbt={"populaton": 3}), "pbt.populaton is not a PBT setting; did you mean 'population'"),
    (dict(pbt={"perturbation_interval": 10}), "fewer than 2 perturbation intervals (20)"),
    (dict(num_envs=[4, 8]), "PBT trains at one batch size: give one num_envs value"),
    (dict(env=["CartPole", "Acrobot"]), "PBT trains one environment"),
    (dict(seeds=[0, 1]), "PBT uses one base seed"),
    (dict(lrs=[1e-3]), "the learning rate is PBT's"),
    (dict(ppo={"ent_coef": 0.01}), "ppo.ent_coef is perturbed by PBT"),
    (dict(train={"checkpoint_every": 5}), "train.checkpoint_every is set by PBT"),
    (dict(scheduler="pbs"), "scheduler must be one of grid, pbt"),
    (dict(parallel=3), "parallel = 3 with PBT: leave it out (or equal to pbt.population)"),
])
def test_bad_pbt_specs_name_the_fix(changes, expected):
    assert expected in problems_of(**changes)


def test_pbt_table_without_the_pbt_scheduler_is_an_error():
    raw = pbt_raw("unused", scheduler="grid", num_envs=[8], targets=[100])
    with pytest.raises(SweepSpecError, match="the pbt table is only used with scheduler = 'pbt'"):
        parse_spec(raw)


def test_pbt_spec_defaults_round_trip_and_members(tmp_path):
    spec = parse_spec(pbt_raw(tmp_path / "out", pbt={"population": 3,
                                                     "perturbation_interval": 2}))
    cfg = PBTConfig.from_dict(spec.pbt)
    # Defaults: the three hyperparameters, lr range around the classic preset's lr (1e-3).
    assert cfg.hyperparams == {"learning_rate": {"log": [1e-4, 1e-2]},
                               "ent_coef": {"values": [0.0, 0.001, 0.003, 0.01, 0.03]},
                               "clip_coef": {"uniform": [0.1, 0.3]}}
    assert (cfg.quantile_fraction, cfg.resample_probability, cfg.metric, cfg.synchronous) == \
        (0.25, 0.25, "return_recent", False)
    assert spec.parallel == 3 and spec.ppo["anneal_lr"] is False and spec.targets == []
    assert parse_spec(spec_to_raw(spec)) == spec
    # Annealing is kept when the spec asks for it (it then multiplies PBT's lr).
    assert parse_spec(pbt_raw(tmp_path, ppo={"anneal_lr": True})).ppo["anneal_lr"] is True

    members = plan_members(spec)
    assert [m.name for m in members] == ["m00", "m01", "m02"]
    assert [m.seed for m in members] == [0, 1, 2]
    for m in members:
        assert m.train["checkpoint_every"] == 2 and m.train["target_return"] is None
        assert m.run_dir == str((tmp_path / "out" / "runs" / m.name).resolve())
        assert 1e-4 <= m.ppo["learning_rate"] <= 1e-2 and m.lr == m.ppo["learning_rate"]
        assert m.ppo["ent_coef"] in cfg.hyperparams["ent_coef"]["values"]
        assert 0.1 <= m.ppo["clip_coef"] <= 0.3
    # Seeded: the same spec gives the same initial population; another seed another one.
    assert [m.ppo for m in plan_members(spec)] == [m.ppo for m in members]
    assert initial_values(cfg, 0) != initial_values(cfg, 1)
    assert len({m.ppo["learning_rate"] for m in members}) == 3


def test_flags_merge_into_the_toml_pbt_table(tmp_path):
    toml = tmp_path / "pbt.toml"
    toml.write_text(f"""
env = "CartPole"
num_envs = 8
num_steps = 16
budget = 1536
backend = "ray"
scheduler = "pbt"
out = "{tmp_path / 'out'}"
[pbt]
population = 3
perturbation_interval = 3
[pbt.hyperparams]
learning_rate = {{ log = [1e-4, 1e-3] }}
ent_coef = {{ values = [0.0, 0.01] }}
""")
    name, dist = parse_param_flag("ent_coef=values:0.02,0,0.01")
    spec = load_spec(toml, {"pbt": {"population": 2, "hyperparams": {name: dist}}})
    assert spec.pbt["population"] == 2 and spec.pbt["perturbation_interval"] == 3
    assert spec.pbt["hyperparams"] == {"learning_rate": {"log": [1e-4, 1e-3]},
                                       "ent_coef": {"values": [0.0, 0.01, 0.02]}}
    with pytest.raises(ValueError, match="--pbt-param takes NAME=KIND:NUMBERS"):
        parse_param_flag("clip_coef=range:0.1,0.2")
    with pytest.raises(ValueError, match="'x' is not a number"):
        parse_param_flag("clip_coef=uniform:0.1,x")


def test_cli_pbt_errors_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "out"
    base = ["sweep", "--env", "CartPole", "--num-envs", "8", "--num-steps", "16", "--budget",
            "1536", "--scheduler", "pbt", "--perturbation-interval", "3", "--out", str(out),
            "--quiet"]
    assert main(base) == 2  # local backend
    err = " ".join(capsys.readouterr().err.split())
    assert "1 problem(s)" in err and "set backend = 'ray' (flag --backend ray)" in err
    assert main([*base, "--backend", "ray", "--population", "1", "--pbt-param",
                 "learning_rate=log:1e-3,1e-4"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "pbt.population must be an integer >= 2" in err and "empty range" in err
    assert not out.exists()
    # A dry run lists the members with their initial hyperparameters.
    assert main([*base, "--backend", "ray", "--dry-run", "--population", "3"]) == 0
    shown = capsys.readouterr().out
    assert all(m in shown for m in ("m00", "m01", "m02")) and not out.exists()


# --------------------------------------------------------------------------------------
# The trainer's override path
# --------------------------------------------------------------------------------------


def test_override_sets_lr_ent_clip_in_force_after_loading(tmp_path, monkeypatch, one_torch_thread):
    cfg = TrainConfig(**{**CLASSIC_TRAIN, "env": "CartPole", "num_envs": 4, "num_steps": 16,
                         "total_agent_steps": 64 * 4, "checkpoint_every": 2, "gns_every": 0,
                         "run_dir": str(tmp_path / "run")})
    ppo = PPOConfig(**{**CLASSIC_PPO, "anneal_lr": True, "learning_rate": 1e-3,
                       "ent_coef": 0.0, "clip_coef": 0.2})
    train(cfg, ppo)

    seen = []
    real_update = loop_mod.ppo_update

    def spy(model, optimizer, batch, ppo_cfg, generator, *args, **kwargs):
        first = optimizer.state[optimizer.param_groups[0]["params"][0]]
        seen.append((optimizer.param_groups[0]["lr"], ppo_cfg.ent_coef, ppo_cfg.clip_coef,
                     int(first["step"])))
        return real_update(model, optimizer, batch, ppo_cfg, generator, *args, **kwargs)

    monkeypatch.setattr(loop_mod, "ppo_update", spy)
    more = dataclasses.replace(cfg, total_agent_steps=64 * 6, resume=True)
    override = PPOOverride(learning_rate=3e-4, ent_coef=0.02, clip_coef=0.33,
                           columns={"pbt/member": "m07"})
    train(more, ppo, override=override)

    # Resumed at iteration 4 of 6: the override's lr under the annealing schedule (it
    # multiplies the override), its ent_coef and clip_coef, and Adam's loaded state
    # (4 iterations x 20 epochs x 1 minibatch steps taken before this process).
    steps = 4 * CLASSIC_PPO["num_epochs"] * CLASSIC_PPO["num_minibatches"]
    assert seen == [(pytest.approx(3e-4 * (1 - 4 / 6)), 0.02, 0.33, steps),
                    (pytest.approx(3e-4 * (1 - 5 / 6)), 0.02, 0.33, steps + 20)]
    rows = load_metrics(tmp_path / "run")
    assert list(rows["iteration"]) == [1, 2, 3, 4, 5, 6]
    before, after = rows.iloc[:4], rows.iloc[4:]
    assert before["learning_rate"].tolist() == pytest.approx([1e-3 * (1 - t / 4)
                                                              for t in range(4)])
    assert before["ent_coef"].isna().all() and before["pbt/member"].isna().all()
    assert after["ent_coef"].tolist() == [0.02, 0.02]
    assert after["clip_coef"].tolist() == [0.33, 0.33]
    assert after["pbt/member"].tolist() == ["m07", "m07"]
    # config.json keeps the settings the run was started with.
    stored = json.loads((tmp_path / "run" / "config.json").read_text())["ppo"]
    assert (stored["learning_rate"], stored["ent_coef"], stored["clip_coef"]) == (1e-3, 0.0, 0.2)

    # A bad override fails before the run is touched.
    with pytest.raises(ValueError, match="clip_coef must be > 0"):
        train(dataclasses.replace(more, total_agent_steps=64 * 8), ppo,
              override=PPOOverride(clip_coef=0.0))
    assert len(load_metrics(tmp_path / "run")) == 6


# --------------------------------------------------------------------------------------
# A member continued from another member's checkpoint (what Tune's exploit does), no Ray
# --------------------------------------------------------------------------------------


def test_member_continues_from_a_donor_checkpoint(tmp_path, one_torch_thread, monkeypatch):
    monkeypatch.setattr(warmup, "WARMUP_ITERATIONS", 0)  # 6 iterations: smooth every one
    out = tmp_path / "out"
    spec = parse_spec(pbt_raw(out, num_envs=4, num_steps=16, budget=64 * 6,
                              pbt={"population": 2, "perturbation_interval": 2,
                                   "hyperparams": HYPER}))
    a, b = plan_members(spec)
    kept: dict[tuple[str, int], Path] = {}
    reports: dict[str, list] = {"m00": [], "m01": []}

    def reporter(name):
        def report(metrics, checkpoint_dir):
            reports[name].append((metrics["iteration"], checkpoint_dir is not None))
            if checkpoint_dir is not None:  # Tune copies it; the trainable deletes its own
                copy = tmp_path / "tune" / f"{name}-{metrics['iteration']}-{len(kept)}"
                kept[name, metrics["iteration"]] = Path(shutil.copytree(checkpoint_dir, copy))
        return report

    hp = lambda plan: {k: plan.ppo[k] for k in HYPER}  # noqa: E731
    run_member(a, hp(a), interval=2, restore=None, report=reporter("m00"))
    run_member(b, hp(b), interval=2, restore=None, report=reporter("m01"))
    assert reports["m00"] == [(1, False), (2, True), (3, False), (4, True), (5, False),
                              (6, True)]
    donor_rows = load_metrics(a.run_dir).set_index("iteration")
    own_rows = load_metrics(b.run_dir).set_index("iteration")

    # Exploit: m01 (finished at 6) continues from m00's checkpoint of iteration 4.
    new = {"learning_rate": 1.2e-3, "ent_coef": 0.01, "clip_coef": 0.25}
    reports["m01"].clear()
    run_member(b, new, interval=2, restore=kept["m00", 4], report=reporter("m01"))
    assert reports["m01"] == [(5, False), (6, True)]
    rows = load_metrics(b.run_dir).set_index("iteration")
    assert list(rows.index) == [1, 2, 3, 4, 5, 6]
    # Rows 1-4: the member's own history; 5-6: from the donor's state, new hyperparameters.
    pd.testing.assert_frame_equal(rows.loc[1:4, own_rows.columns], own_rows.loc[1:4])
    assert rows.loc[4, "episodes_total"] != donor_rows.loc[4, "episodes_total"]
    assert rows.loc[5, "episodes_total"] - rows.loc[5, "episodes"] == \
        donor_rows.loc[4, "episodes_total"]
    assert rows.loc[5, "agent_steps"] == donor_rows.loc[5, "agent_steps"] == 5 * 64
    for key, value in new.items():
        assert rows.loc[[5, 6], key].tolist() == [value, value]
    assert rows.loc[[5, 6], "pbt/donor"].tolist() == ["m00", "m00"]
    assert rows.loc[[5, 6], "pbt/donor_iteration"].tolist() == [4, 4]
    assert rows.loc[[1, 4], "pbt/donor"].tolist() == ["m01", "m01"]
    exploit = [e for e in read_events(out) if e["event"] == "exploit"]
    assert len(exploit) == 1 and exploit[0]["run"] == "m01" and exploit[0]["donor"] == "m00"
    assert (exploit[0]["donor_iteration"], exploit[0]["left_iteration"]) == (4, 6)
    assert exploit[0]["donor_hyperparams"] == hp(a)
    assert exploit[0]["donor_episodes_total"] == donor_rows.loc[4, "episodes_total"]
    meta = json.loads((kept["m01", 6] / "pbt_member.json").read_text())
    assert meta == {"member": "m01", "iteration": 6, "donor": "m00", "donor_iteration": 4,
                    "hyperparams": new}

    # Restored from its own checkpoint (what a Tune pause does): a plain resume, here an
    # exact one (CartPole's environments are in the checkpoint), no reseeding.
    before = load_metrics(a.run_dir)
    run_member(a, hp(a), interval=2, restore=kept["m00", 4], report=reporter("m00"))
    after = load_metrics(a.run_dir)
    timing = [c for c in after.columns if c in TIMING_COLUMNS or c.endswith("/seconds")]
    pd.testing.assert_frame_equal(after.drop(columns=timing), before.drop(columns=timing))
    assert read_events(out)[-1]["event"] == "restore"
    assert after["pbt/donor"].tolist() == ["m00"] * 6

    table = write_pbt_outputs(out)
    assert list(table.columns) == PBT_COLUMNS and len(table) == 12
    pd.testing.assert_frame_equal(pd.read_parquet(out / "pbt.parquet"), table)
    assert (out / "pbt.png").stat().st_size > 1000 and (out / "pbt.csv").exists()
    m01 = table[table["member"] == "m01"].set_index("iteration")
    assert m01["exploit"].tolist() == [False] * 4 + [True, False]
    assert m01.loc[5, "lr"] == m01.loc[5, "lr_pbt"] == 1.2e-3  # constant lr with PBT
    assert m01["gns_measured"].tolist() == [True, False] * 3
    assert np.isfinite(m01.loc[m01["gns_measured"], "b_simple_total"]).all()


# --------------------------------------------------------------------------------------
# A tiny population on Ray Tune
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    """Two CartPole members, 30 PPO iterations of 128 agent steps each, perturbation every
    3 iterations, noise scale every 2 iterations, on a local 2-CPU Ray instance.

    Synchronous PBT: the members meet at every perturbation point, so the weaker one copies
    the stronger at each (asynchronous decisions depend on which member reaches a point
    first: on a loaded machine one member can run ahead and no exploit happen at all)."""
    ray = pytest.importorskip("ray", reason="ray is not importable: pip install -e '.[ray]'")
    pytest.importorskip("ray.tune", reason="ray is installed without Tune")
    from rl.sweeps.executors import run_sweep

    # Members train in Ray workers on cpus_per_trial = 1 torch thread each.
    out = tmp_path_factory.mktemp("pbt") / "out"
    spec = parse_spec(pbt_raw(out, budget=128 * 30, targets=[100],
                              pbt={"population": 2, "perturbation_interval": 3,
                                   "quantile_fraction": 0.5, "resample_probability": 0.0,
                                   "synchronous": True, "hyperparams": HYPER}))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        table = run_sweep(spec, log=lambda msg: None)
    finally:
        ray.shutdown()
    return spec, table


@pytest.mark.ray
@pytest.mark.slow
def test_population_perturbs_exploits_and_measures(population):
    spec, table = population
    out = Path(spec.out)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "pbt.parquet"), table)
    assert list(table.columns) == PBT_COLUMNS and (out / "pbt.png").exists()
    events = read_events(out)
    statuses = [json.loads((out / "runs" / m / "status.json").read_text())["state"]
                for m in ("m00", "m01")]
    assert statuses == ["finished", "finished"], events
    for member, rows in table.groupby("member"):
        # A member's timeline: iterations 1 ... 30, continuing at donor_iteration + 1 after an
        # exploit (a donor ahead of the member leaves a gap; one behind replaced rows).
        its = rows["iteration"].to_numpy()
        assert its[0] == 1 and its[-1] == 30 and (np.diff(its) > 0).all(), member
        jumps = rows[np.r_[False, np.diff(its) > 1]]
        assert jumps["exploit"].all(), jumps
        assert (rows["agent_steps"] == 128 * rows["iteration"]).all()

    # Every value in force is one the declared ranges and lists allow.
    assert table["lr"].between(3e-4, 3e-3).all()
    assert table["clip_coef"].between(0.1, 0.3).all()
    assert table["ent_coef"].isin(HYPER["ent_coef"]["values"]).all()
    assert (table["lr"] == table["lr_pbt"]).all()  # constant lr: PBT's own

    # Exploits: at least one; each continues the member's counter from the donor's
    # checkpoint, with the donor's counters, and explores from the donor's values the way
    # Tune's explore does with resample_probability 0 (x0.8 or x1.2 clipped to the range;
    # a neighbour in the list).
    exploits = [e for e in events if e["event"] == "exploit"]
    assert exploits, "no member copied another's checkpoint"
    # Synchronous: the weaker member copies the stronger at every perturbation point before
    # the last iteration, whatever the timing.
    assert set(range(3, 30, 3)) <= {e["donor_iteration"] for e in exploits}, exploits
    metrics = {m: load_metrics(out / "runs" / m).set_index("iteration")
               for m in ("m00", "m01")}
    # A member can copy the same donor checkpoint twice (the donor has not reached its next
    # perturbation point yet); the later exploit then replaced the rows of the earlier one.
    latest = {(e["run"], e["donor"], e["donor_iteration"]): e for e in exploits}
    checked = 0
    for e in exploits:
        assert e["donor"] != e["run"] and e["donor_iteration"] % 3 == 0
        old, new = e["donor_hyperparams"], e
        for name in ("learning_rate", "clip_coef"):
            low, high = HYPER[name]["log" if name == "learning_rate" else "uniform"]
            allowed = [float(f"{min(max(old[name] * f, low), high):.6g}") for f in (0.8, 1.2)]
            assert any(new[name] == pytest.approx(a, rel=1e-9) for a in allowed), \
                (name, old, new)
        values = HYPER["ent_coef"]["values"]
        i = values.index(old["ent_coef"])
        assert new["ent_coef"] in values[max(0, i - 1):i + 2]
        row = e["donor_iteration"] + 1
        mine = metrics[e["run"]]
        if latest[e["run"], e["donor"], e["donor_iteration"]] is e and row in mine.index and \
                mine.loc[row, "pbt/donor"] == e["donor"] and \
                mine.loc[row, "pbt/donor_iteration"] == e["donor_iteration"]:
            assert mine.loc[row, "episodes_total"] - mine.loc[row, "episodes"] == \
                e["donor_episodes_total"]
            flagged = table[(table["member"] == e["run"]) & (table["iteration"] == row)]
            assert flagged["exploit"].item() and flagged["donor"].item() == e["donor"]
            assert mine.loc[row, "learning_rate"] == e["learning_rate"]
            checked += 1
        donor = metrics[e["donor"]]
        if e["donor_iteration"] in donor.index and all(  # still the donor's own row
                donor.loc[e["donor_iteration"], k] == old[k] for k in old):
            assert donor.loc[e["donor_iteration"], "episodes_total"] == \
                e["donor_episodes_total"]
    assert checked >= 1
    # Perturbations show in the table: a member's hyperparameters change over its schedule.
    changed = table.groupby("member")[["lr", "ent_coef", "clip_coef"]].nunique().max(axis=1)
    assert (changed > 1).any()

    # The noise scale along each member's schedule, at its cadence (every 2nd iteration).
    for member, rows in table.groupby("member"):
        measured = rows[rows["gns_measured"]]
        assert measured["iteration"].tolist() == \
            [i for i in rows["iteration"] if (i - 1) % 2 == 0], member
        for term in ("total", "value"):
            # The smoothed ratio is NaN, by design, while the smoothed |G|^2 is not above 0
            # (late CartPole gradients are mostly noise; which iterations depends on the
            # exploit schedule, i.e. on timing): positive wherever defined, defined mostly.
            # The warm-up's measurements are not smoothed (rl/measure/warmup.py).
            b = measured.loc[measured["iteration"] > WARMUP_ITERATIONS, f"b_simple_{term}"]
            assert (b[np.isfinite(b)] > 0).all() and np.isfinite(b).sum() >= len(b) // 2
        m = metrics[member].loc[measured["iteration"]]
        for term in ("total", "policy", "value"):
            for stat in ("g2", "trace_sigma"):
                assert np.isfinite(m[f"gns/{term}/{stat}"].astype(float)).all(), (term, stat)
    # Tune's checkpoint copies are gone; its own records stay.
    assert not list((out / "ray").glob("*/*/checkpoint_*"))
    assert list((out / "ray").glob("*/pbt_global.txt"))


@pytest.mark.ray
@pytest.mark.slow
def test_finished_population_is_not_trained_again_and_fit_rebuilds(population, capsys):
    spec, table = population
    out = Path(spec.out)
    starts = sum(e["event"] == "start" for e in read_events(out))
    assert main(["sweep", "--out", str(out), "--quiet"]) == 0  # continues the stored spec
    assert sum(e["event"] == "start" for e in read_events(out)) == starts
    assert "m00" in capsys.readouterr().out
    (out / "pbt.csv").unlink()
    assert main(["fit", str(out), "--no-plots"]) == 0
    assert "no critical batch size to fit" in " ".join(capsys.readouterr().out.split())
    pd.testing.assert_frame_equal(pbt_table(out), table)
    assert (out / "pbt.csv").exists()
    # Another population's settings in the same directory: refused before anything runs.
    other = parse_spec({**spec_to_raw(spec), "pbt": {**spec.pbt, "population": 3}})
    from rl.sweeps.pbt import run_pbt

    with pytest.raises(SweepStateError, match="new out"):
        run_pbt(other)
    assert math.isfinite(table["return"].iloc[-1])
