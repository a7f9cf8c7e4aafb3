"""Supervised critical-batch sweeps in the study: the plan, the results rows (kind
supervised, in examples and optimizer steps), the headline, the report, and a reference run
made before SupervisedConfig gained fields."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rl.cli import main
from rl.measure.supervised import SupervisedConfig
from rl.study.headline import headline_table
from rl.study.plan import SUPERVISED_PART, Overrides, build_plan, describe_plan, study_parts
from rl.study.report import format_interval
from rl.study.results import read_results_table
from rl.study.run import _supervised_state
from rl.study.settings import SUITES, SUPERVISED_GRIDS
from rl.sweeps import protocol
from rl.sweeps.executors import run_one, run_sweep
from rl.sweeps.spec import parse_spec
from tests.rl.study.test_compare import _numbers, _parse, _table_numbers

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_plan_runs_supervised_sweeps_on_the_preset_grid(tmp_path):
    plan = build_plan(games=["CartPole"], preset="cpu-quick", out=tmp_path / "s",
                      overrides=Overrides(supervised_sweeps="digits-mlp,digits-cnn",
                                          noise_games="none", sweep_games="none"))
    assert [s.task for s in plan.supervised_sweeps] == ["digits-mlp", "digits-cnn"]
    parts = {(p.kind, p.game): p for p in study_parts(plan)}
    part = parts[(SUPERVISED_PART, "digits-cnn")]
    grid = SUPERVISED_GRIDS["cpu-quick"]
    assert part.spec.is_supervised and part.spec.batch_sizes == list(grid.batch_sizes)
    assert part.spec.targets == list(grid.targets)
    assert part.out == tmp_path / "s" / "supervised-sweeps" / "digits-cnn"
    table = describe_plan(plan).set_index("game")
    assert table.loc["digits-mlp", "family"] == "supervised"
    assert table.loc["digits-mlp", "sweep runs"] == len(grid.batch_sizes) * len(grid.lrs) * \
        grid.seeds
    assert json.loads(json.dumps(plan.to_dict()))["supervised_sweeps"][0]["task"] == "digits-mlp"
    none = build_plan(games=["CartPole"], out=tmp_path / "s", overrides=Overrides())
    assert none.supervised_sweeps == []  # a list of games: none unless asked
    demo = build_plan(suite="demo", preset="cpu-quick", out=tmp_path / "s")
    assert [s.task for s in demo.supervised_sweeps] == list(
        SUITES["demo"].supervised_sweeps["cpu-quick"]) == ["digits-mlp"]
    assert build_plan(suite="demo", preset="cpu-quick", out=tmp_path / "s", overrides=Overrides(
        supervised_sweeps="none")).supervised_sweeps == []
    with pytest.raises(ValueError, match="unknown supervised task"):
        build_plan(games=["CartPole"], out=tmp_path / "s",
                   overrides=Overrides(supervised_sweeps=["digits-rnn"]))
    with pytest.raises(ValueError, match="no sweep there"):
        build_plan(games=["CartPole"], out=tmp_path / "s", overrides=Overrides(
            supervised_sweep_dirs={"digits-mlp": str(tmp_path / "nothing")}))


def test_a_reference_run_from_before_the_new_fields_is_still_the_same_run(tmp_path):
    cfg = SupervisedConfig(epochs=2)
    stored = {"kind": "gns-supervised", **dataclasses.asdict(cfg)}
    for new in ("channels", "sampling", "progress", "target", "diverge_factor",
                "eval_per_octave"):
        del stored[new]
    (tmp_path / "config.json").write_text(json.dumps(stored))
    (tmp_path / "summary.json").write_text("{}")
    assert _supervised_state(tmp_path, cfg) == "finished"
    assert _supervised_state(tmp_path, dataclasses.replace(cfg, epochs=3)) == "conflict"
    assert _supervised_state(tmp_path, dataclasses.replace(cfg, model="cnn")) == "conflict"


@pytest.fixture(scope="module")
def stored_sweep(tmp_path_factory):
    """A small finished digits-mlp sweep (stage 1, one lr per batch size)."""
    out = tmp_path_factory.mktemp("sup") / "digits-mlp"
    spec = parse_spec(dict(env="digits-mlp", batch_sizes=[8, 32, 128, 512, 2048], lrs=[0.1],
                           lr_rule="sqrt", base_batch_size=64, seeds=2,
                           targets=[-0.5, -0.35, -0.25], budget=20_000,
                           supervised={"gns_every": 2}, out=str(out)))

    class InProcess:
        def run(self, plans, on_done):
            for p in plans:
                on_done(p, run_one(p.to_dict()))

    mp = pytest.MonkeyPatch()
    mp.setattr(protocol, "FLOOR_GAMES", 10)
    try:
        run_sweep(spec, executor=InProcess())
    finally:
        mp.undo()
    return out


def test_a_study_reports_a_stored_supervised_sweep(stored_sweep, tmp_path):
    out = tmp_path / "study"
    assert main(["compare", "CartPole", "--sweep-games", "none", "--noise-games", "none",
                 "--no-supervised", "--supervised-sweep-dir", f"digits-mlp={stored_sweep}",
                 "--n-boot", "50", "--out", str(out), "--quiet"]) == 0
    df = read_results_table(out / "results.csv")
    mine = df[df["task"] == "digits-mlp"]
    assert set(mine["kind"]) == {"supervised"} and set(mine["source"]) == {"measured"}
    b_crit = mine[mine["quantity"] == "b_crit"]
    assert sorted(b_crit["target"]) == [-0.5, -0.35, -0.25]
    assert set(b_crit["unit"]) == {"training examples"}
    assert set(mine.loc[mine["quantity"] == "s_min", "unit"]) == {"optimizer steps"}
    # B_simple along the sweep runs at the best lr, after the warm-up, with its interval.
    bs = mine[(mine["quantity"] == "b_simple") & (mine["term"] == "total")].iloc[0]
    assert 0 < bs["lo"] <= bs["value"] <= bs["hi"]
    assert "after a warm-up of 10 optimizer steps" in bs["note"]
    assert mine[mine["term"].isin(["policy", "value"])].empty  # one loss
    floor = mine[mine["quantity"] == "untrained_floor"].iloc[0]
    assert floor["unit"] == "progress score" and floor["value"] < -2
    laws = mine[mine["quantity"] == "b_crit_exponent"].iloc[0]
    assert laws["unit"] == "exponent in the training loss"
    head = headline_table(df).set_index("task")
    assert head.loc["digits-mlp", "unit"] == "training examples"
    assert head.loc["digits-mlp", "B_simple total [95%]"] == format_interval(
        bs["value"], bs["lo"], bs["hi"])
    assert (out / "stored" / "supervised" / "digits-mlp" / "fit.csv").exists()
    assert not (stored_sweep / "fit.csv").exists()  # the analysis went to the study
    report = (out / "report.md").read_text()
    assert "digits-mlp" in report and "optimizer steps" in report
    # No number on the page that is not in the results table (as for the games).
    page = _parse(out / "report.html")
    known = _table_numbers(df)
    assert not [x for x in _numbers(" ".join(page.text)) if x not in known]
