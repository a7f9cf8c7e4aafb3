"""Batch-size advice against the committed sweeps (issue #28 item 4). Trains nothing.

For each sweep: the probe is a committed noise-scale run at the sweep's middle batch size
(its first MEASUREMENTS measurements past the 10-iteration warm-up, one row per seed), the
ratio B_crit / B_simple is calibrated on the other tasks only (two ways: the study's ratio,
B_simple up to each task's target; and probe-matched, B_simple over the same probe window;
an oracle row uses the measured B_crit itself), the seconds per PPO iteration at each batch
size come from the sweep's own runs (median sps), and the advice (rl.advise.advise_from) is
set against the sweep's measured S(B) at each batch size's best lr: the measured fastest
batch size, the measured speedup at it, and the measured speedup the advice's batch would
have given.

    python reference/advice-validation/validate.py OUT.csv     (from the repository root)
"""
import math
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from rl.advise import (
    Candidate,
    RatioCalibration,
    advise_from,
    load_run_metrics,
    load_study,
    noise_from_metrics,
    ratio_calibration,
)
from rl.advise.probe import smooth_timings
from rl.measure.run_average import ratio_summary
from rl.measure.warmup import counted_measurements

REPO = Path(__file__).resolve().parents[2]
SWEEPS = REPO / "reference" / "protocol-sweeps"
MEASUREMENTS = 30
# task, sweep folder (fit_per_batch.csv, results.csv, fit.csv), noise runs, headline target
TASKS = [
    ("CartPole", SWEEPS / "cartpole", SWEEPS / "noise-cartpole", 200.0),
    ("Acrobot", SWEEPS / "acrobot", SWEEPS / "noise-acrobot", -100.0),
    ("MinAtar-Breakout", SWEEPS / "minatar-breakout", SWEEPS / "noise-minatar-breakout", 5.0),
]
BREAKOUT = ("Breakout", REPO / "reference" / "breakout-sweep", 10.0)


def noise_runs(folder: Path, tmp: Path) -> dict[str, pd.DataFrame]:
    with tarfile.open(folder / "runs.tar.xz") as tar:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(tmp / folder.name, **safe)
    runs = sorted((tmp / folder.name / "runs").iterdir())
    return {r.name: load_run_metrics(r) for r in runs}


def measured_s(sweep: Path, target: float) -> pd.Series:
    """PPO iterations to the target at each batch size's best lr (median of seeds)."""
    fpb = sweep / "fit_per_batch.csv"
    if fpb.exists():
        f = pd.read_csv(fpb)
        f = f[(f["target"] == target) & f["reached"].astype(bool)]
        return f.set_index("rollout_batch_size")["s_median"].astype(float)
    r = pd.read_csv(sweep / "results.csv")  # one lr per batch size (the Breakout sweep)
    col = f"iterations_to_target_{target:g}"
    return r.groupby("rollout_batch_size")[col].median().dropna().astype(float)


def seconds_per_iteration(sweep: Path) -> pd.Series:
    r = pd.read_csv(sweep / "results.csv")
    sps = r.groupby("rollout_batch_size")["sps_median"].median()
    return sps.index.to_series().astype(float) / sps


def probe_window(metrics: pd.DataFrame) -> pd.DataFrame:
    return counted_measurements(metrics, "value").iloc[:MEASUREMENTS]


def probe_matched(study: pd.DataFrame, probes: dict[str, list[pd.DataFrame]],
                  leave_out: str) -> RatioCalibration:
    """B_crit / B_simple with B_simple over the probe window (seeds pooled), other tasks."""
    logs, tasks = [], []
    for task, windows in probes.items():
        if task == leave_out:
            continue
        w = pd.concat(windows)
        labels = np.concatenate([[i] * len(x) for i, x in enumerate(windows)])
        bs = ratio_summary(w["g2"], w["trace_sigma"], runs=labels)["b_simple"]
        row = study[(study["task"] == task) & (study["quantity"] == "b_crit")
                    & (study["target"] == dict((t[0], t[3]) for t in TASKS)[task])]
        logs.append(math.log(float(row["value"].iloc[0]) / bs))
        tasks.append(task)
    mean = float(np.mean(logs))
    sd = float(np.std(logs, ddof=1)) if len(logs) > 1 else 0.0
    return RatioCalibration("value", math.exp(mean), sd, math.nan, math.nan, 0.9,
                            tuple(tasks), "probe-matched: B_crit / B_simple over the first "
                            f"{MEASUREMENTS} measurements past the warm-up")


def in_band(pred, measured) -> str:
    """Whether the measured B_crit lies in the predicted band; for a lower bound, whether
    the predicted point agrees with it."""
    if math.isfinite(measured[0]):
        return str(bool(pred.lo <= measured[0] <= pred.hi))
    agrees = "agrees" if pred.b_crit >= measured[1] else "disagrees"
    return f"bound >= {measured[1]:.0f}: the point {agrees}"


def compare(task, seed, cal_name, noise, cal, s_meas, t_iter, b_mid, b_crit_row):
    sizes = [b for b in s_meas.index if b in t_iter.index]
    fitted = smooth_timings(np.array(sizes, float), t_iter[sizes].to_numpy(float))
    cands = [Candidate(int(b), 1, float(t)) for b, t in zip(sizes, fitted, strict=True)]
    adv = advise_from(noise, cal, cands, reference_batch_size=b_mid)
    wall = {b: s_meas[b] * t for b, t in zip(sizes, fitted, strict=True)}
    best = min(wall, key=wall.get)
    rec, eff = adv.fastest, adv.sample_efficient
    return dict(
        task=task, probe_run=seed, calibration=cal_name,
        calibrated_on=" + ".join(cal.tasks), ratio=cal.ratio,
        probe_batch=noise.rollout_batch_size, probe_measurements=noise.measurements,
        probe_return=f"{noise.return_first:.3g}-{noise.return_last:.3g}",
        b_simple=noise.b_simple, b_simple_lo=noise.lo, b_simple_hi=noise.hi,
        b_crit_pred=adv.b_crit.b_crit, b_crit_pred_lo=adv.b_crit.lo,
        b_crit_pred_hi=adv.b_crit.hi, b_crit_measured=b_crit_row[0],
        b_crit_measured_lo=b_crit_row[1], b_crit_measured_hi=b_crit_row[2],
        b_crit_in_band=in_band(adv.b_crit, b_crit_row),
        reference_batch=adv.reference_batch_size,
        recommended_fastest=rec.rollout_batch_size, recommended_fastest_lo=rec.lo,
        recommended_fastest_hi=rec.hi, recommended_efficient=eff.rollout_batch_size,
        measured_fastest=best,
        predicted_speedup=rec.speedup, predicted_speedup_lo=rec.speedup_lo,
        predicted_speedup_hi=rec.speedup_hi,
        measured_speedup_best=wall[b_mid] / wall[best],
        measured_speedup_at_recommended=wall[b_mid] / wall[rec.rollout_batch_size],
        measured_speedup_at_efficient=wall[b_mid] / wall[eff.rollout_batch_size],
    )


def main(out: Path) -> pd.DataFrame:
    study = load_study()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = {task: noise_runs(noise, Path(tmp)) for task, _, noise, _ in TASKS}
        probes = {task: [probe_window(m) for m in r.values()] for task, r in runs.items()}
        for task, sweep, _, target in TASKS:
            fit = pd.read_csv(sweep / "fit.csv")
            f = fit[fit["target"] == target].iloc[0]
            b_crit_row = (float(f["b_crit"]), float(f["b_crit_lo"]), float(f["b_crit_hi"]))
            s_meas, t_iter = measured_s(sweep, target), seconds_per_iteration(sweep)
            cals = {"study": ratio_calibration(study, leave_out=[task]),
                    "probe-matched": probe_matched(study, probes, task)}
            for seed, metrics in runs[task].items():
                noise = noise_from_metrics(metrics, measurements=MEASUREMENTS, source=seed)
                b_mid = noise.rollout_batch_size
                # The oracle: B_crit exactly as measured, to separate the error of B_simple ->
                # B_crit from that of the S(B) curve and the timings.
                oracle = RatioCalibration("value", b_crit_row[0] / noise.b_simple, 0.0, math.nan,
                                          math.nan, 0.9, (task,), "oracle: the measured B_crit")
                for name, cal in {**cals, "oracle (measured B_crit)": oracle}.items():
                    rows.append(compare(task, seed, name, noise, cal, s_meas, t_iter, b_mid,
                                        b_crit_row))
        # Breakout (Atari): only a bound on B_crit; the probe is the seed-1 parity run at
        # 8 x 128 (B_simple every 10th iteration, so 30 measurements span 300 iterations).
        task, sweep, target = BREAKOUT
        metrics = load_run_metrics_file(REPO / "reference" / "breakout-parity",
                                        "ours-seed1", Path(tmp))
        noise = noise_from_metrics(metrics, measurements=MEASUREMENTS,
                                   source="breakout-parity/ours-seed1")
        s_meas, t_iter = measured_s(sweep, target), seconds_per_iteration(sweep)
        for name, cal in {"study": ratio_calibration(study, leave_out=[task]),
                          "probe-matched": probe_matched(study, probes, task)}.items():
            rows.append(compare(task, "ours-seed1 (every 10th iteration)", name, noise, cal,
                                s_meas, t_iter, noise.rollout_batch_size,
                                (math.nan, 1837.0, math.inf)))
    df = pd.DataFrame(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False, float_format="%.4g")
    return df


def load_run_metrics_file(folder: Path, stem: str, tmp: Path) -> pd.DataFrame:
    """A run stored as STEM.metrics.jsonl beside STEM.config.json: copied into a run folder."""
    run = tmp / stem
    run.mkdir()
    for name in ("config.json", "metrics.jsonl", "status.json"):
        src = folder / f"{stem}.{name}"
        if src.exists():
            (run / name).write_bytes(src.read_bytes())
    return load_run_metrics(run)


if __name__ == "__main__":
    table = main(Path(sys.argv[1] if len(sys.argv) > 1 else
                      "reference/advice-validation/validation.csv"))
    cols = ["task", "probe_run", "calibration", "b_simple", "b_crit_pred", "b_crit_measured",
            "recommended_fastest", "measured_fastest", "predicted_speedup",
            "measured_speedup_best", "measured_speedup_at_recommended"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
