"""`rlscale sharpness SWEEP_DIR` keeps what it measured (#24 item 7): rows merged by run,
saved after each run. The measurement itself is replaced by a stand-in (seconds, not the
minutes a checkpoint's Hessian takes; tests/rl/analysis/test_sharpness.py measures)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rl.analysis import sharpness
from rl.cli import main
from rl.sweeps.results import SHARPNESS_FILE, read_results

BATCH = {f"r{b}-s{s}": b for b in (64, 128, 256) for s in (0, 1)}


def _sweep(tmp_path: Path) -> Path:
    """A sweep directory kept as its results table: six finished runs, 3 batch sizes x 2
    seeds."""
    pd.DataFrame([dict(run=run, env="CartPole", rollout_batch_size=b, num_envs=b // 16,
                       num_steps=16, lr=1e-3, seed=int(run[-1]), status="finished",
                       final_return_recent=100.0, message="")
                  for run, b in BATCH.items()]).to_csv(tmp_path / "results.csv", index=False)
    return tmp_path


class Measured(list):
    """The runs measured, in order; the run named ``kill_at`` is interrupted (Ctrl-C)."""

    kill_at: str | None = None


@pytest.fixture
def measured(monkeypatch) -> Measured:
    calls = Measured()

    def fake(run_dir, cfg):
        name = Path(run_dir).name
        if name == calls.kill_at:
            raise KeyboardInterrupt
        calls.append(name)
        return pd.DataFrame([dict(term=term, repeat=r, samples=8, loss=1.0,
                                  top_eigenvalue=float(len(calls)), eigen_iterations=3,
                                  **{"eps_sharpness_0.001": 2.0, "eps_sharpness_0.0005": 1.0},
                                  ascent_steps=2, power_iters=3, iteration=10,
                                  rollout_batch_size=BATCH[name], run_dir=str(run_dir))
                             for term in ("policy", "value") for r in range(cfg.repeats)])

    monkeypatch.setattr(sharpness, "run_sharpness", fake)
    return calls


def test_a_later_call_for_some_seeds_keeps_the_other_runs_rows(tmp_path, measured):
    sweep = _sweep(tmp_path)
    args = ["sharpness", str(sweep), "--repeats", "2"]
    assert main([*args, "--seeds", "0"]) == 0
    assert main([*args, "--seeds", "1"]) == 0
    rows = pd.read_csv(sweep / SHARPNESS_FILE)
    assert sorted(set(rows["run"])) == sorted(BATCH) and len(rows) == 6 * 2 * 2
    # Measuring a run again replaces its rows, and only its rows.
    assert main([*args, "--seeds", "1", "--lr", "1e-3"]) == 0
    rows = pd.read_csv(sweep / SHARPNESS_FILE)
    assert len(rows) == 6 * 2 * 2 and sorted(set(rows["run"])) == sorted(BATCH)
    latest = rows.groupby("run")["top_eigenvalue"].first()
    assert all(latest[r] > 3 for r in BATCH if r.endswith("s1"))  # the third call's values
    assert all(latest[r] <= 3 for r in BATCH if r.endswith("s0"))  # the first call's
    table = read_results(sweep).set_index("run")
    assert table["top_eigenvalue_policy"].notna().all()


def test_a_kill_loses_only_the_run_in_progress(tmp_path, measured):
    sweep = _sweep(tmp_path)
    measured.kill_at = "r128-s0"  # measured third (by batch size, then seed)
    assert main(["sharpness", str(sweep), "--repeats", "2"]) == 130
    rows = pd.read_csv(sweep / SHARPNESS_FILE)
    assert sorted(set(rows["run"])) == ["r64-s0", "r64-s1"] and len(rows) == 2 * 2 * 2
    assert read_results(sweep).set_index("run")["top_eigenvalue_policy"].notna().sum() == 2


def test_an_unreadable_sharpness_table_is_refused_before_measuring(tmp_path, measured, capsys):
    sweep = _sweep(tmp_path)
    (sweep / SHARPNESS_FILE).write_text("term,repeat\npolicy,0\n")  # a single run's table
    assert main(["sharpness", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert str(sweep / SHARPNESS_FILE) in err and "another --out" in err
    assert measured == [] and (sweep / SHARPNESS_FILE).read_text() == "term,repeat\npolicy,0\n"


def test_best_lr_measures_the_runs_each_batch_size_fits_with(tmp_path, measured, capsys,
                                                             monkeypatch):
    """``--best-lr``: only the runs at each batch size's chosen learning rate (best_lr.json)."""
    from rl.sweeps.state import BestLr, add_best_lrs

    sweep = _sweep(tmp_path)
    table = pd.read_csv(sweep / "results.csv")
    other = table.assign(run=table["run"] + "-lr2", lr=2e-3)  # a second lr at every B
    pd.concat([table, other]).to_csv(sweep / "results.csv", index=False)
    for run, b in list(BATCH.items()):
        monkeypatch.setitem(BATCH, run + "-lr2", b)
    assert main(["sharpness", str(sweep), "--best-lr"]) == 2  # no choices recorded yet
    assert "records no best learning rates" in " ".join(capsys.readouterr().err.split())
    add_best_lrs(sweep, [BestLr("CartPole", b, lr, 100.0, (1e-3, 2e-3), (0, 1))
                         for b, lr in ((64, 1e-3), (128, 2e-3), (256, 2e-3))])
    assert main(["sharpness", str(sweep), "--best-lr", "--repeats", "1"]) == 0
    assert measured == ["r64-s0", "r64-s1", "r128-s0-lr2", "r128-s1-lr2", "r256-s0-lr2",
                        "r256-s1-lr2"]
