"""The study's noise-scale rows (rl/study/results.py, ``noise_b_simple_rows``): averages over
the measurements after the warm-up, on synthetic runs with a known start-up transient."""

from __future__ import annotations

import math

from rl.measure.warmup import WARMUP_ITERATIONS
from rl.study.results import noise_b_simple_rows
from tests.rl.measure.transient import B_TRUE, Z, ratio_sd, transient_run


def test_run_averaged_and_quarter_rows_leave_out_the_transient():
    runs = [transient_run(240, seed=s) for s in (0, 1)]
    rows = noise_b_simple_rows("Toy", runs)
    by = {(r["quantity"], r["term"]): r for r in rows}
    counted = 240 - WARMUP_ITERATIONS
    quarter = round(0.25 * counted)
    for term in ("total", "policy", "value"):
        whole = by["b_simple", term]
        assert whole["n"] == 2 * counted
        assert abs(whole["value"] - B_TRUE) < Z * ratio_sd(2 * counted)
        assert whole["lo"] < whole["value"] < whole["hi"]
        assert f"warm-up of {WARMUP_ITERATIONS} PPO iterations" in whole["note"]
        assert "heavy-tailed" not in whole["note"]
        for quantity in ("b_simple_start", "b_simple_end"):
            r = by[quantity, term]
            assert r["n"] == 2 * quarter
            assert abs(r["value"] - B_TRUE) < Z * ratio_sd(2 * quarter), (quantity, term)
    # The return over the first quarter starts after the warm-up (0.05 per iteration).
    start = by["return_start", ""]["value"]
    assert math.isclose(start, 0.05 * (WARMUP_ITERATIONS + (1 + quarter) / 2))


def test_heavy_tails_are_named_in_the_note():
    run = transient_run(120)
    g2 = run["gns/total/g2"].copy()
    g2[run["iteration"] == 60] = 500.0  # one estimate carries most of sum |G|^2
    run["gns/total/g2"] = g2
    rows = {(r["quantity"], r["term"]): r for r in noise_b_simple_rows("Toy", [run])}
    assert "heavy-tailed" in rows["b_simple", "total"]["note"]
    assert "heavy-tailed" not in rows["b_simple", "value"]["note"]


def test_b_simple_to_a_target_counts_the_training_before_it():
    # return_recent = 0.05 x iteration, games = 2 x iteration: with a 20-game window, return
    # 5 is first reached at iteration 100. Past it the trace quadruples (B_simple x 4): the
    # average to the target leaves that out and recovers B_TRUE; a target never reached
    # counts the whole run and says so.
    from rl.study.results import b_simple_to_target_rows

    runs = []
    for s in (0, 1):
        run = transient_run(240, seed=s)
        late = run["iteration"] > 100
        for term in ("total", "policy", "value"):
            run.loc[late, f"gns/{term}/trace_sigma"] *= 4.0
        runs.append(run)
    rows = {(r["target"], r["term"]): r for r in b_simple_to_target_rows("Toy", runs, [5, 50],
                                                                         window=20)}
    counted = 100 - WARMUP_ITERATIONS
    r = rows[5.0, "total"]
    assert r["n"] == 2 * counted and r["quantity"] == "b_simple_to_target"
    assert abs(r["value"] - B_TRUE) < Z * ratio_sd(2 * counted)
    assert "never reached" not in r["note"]
    whole = rows[50.0, "total"]
    assert whole["n"] == 2 * (240 - WARMUP_ITERATIONS) and "2 of 2 runs never" in whole["note"]
    assert whole["value"] > 2 * B_TRUE  # the late stretch at 4 x B_TRUE dominates
