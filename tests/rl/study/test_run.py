"""The study's end-of-run measurements: sharpness is measured once per finished run."""

from __future__ import annotations

import pandas as pd

import rl.study.run as study_run
from rl.analysis.sharpness import SharpnessConfig, eps_columns
from rl.study.plan import SHARPNESS_FILE, Overrides, build_plan, study_parts
from rl.study.settings import STUDY_SHARPNESS
from rl.sweeps.spec import parse_spec, plan_runs
from rl.sweeps.state import write_sweep_state


def test_sharpness_measures_only_runs_finished_since_the_last_time(tmp_path, monkeypatch):
    stored = tmp_path / "cartpole"
    spec = parse_spec(dict(env="CartPole", num_envs=[1, 2, 4], num_steps=32, lrs=[1e-3],
                           seeds=2, targets=[40], budget=2048, out=str(stored)))
    stored.mkdir()
    write_sweep_state(spec, plan_runs(spec))
    plan = build_plan(games=["CartPole"], out=tmp_path / "study", overrides=Overrides(
        sweep_dirs={"CartPole": str(stored)}, supervised=False, noise_games="none"))
    names = {(p.num_envs, p.seed): p.name for p in plan_runs(spec)}
    cfg = SharpnessConfig(**STUDY_SHARPNESS)
    finished: set[str] = set()
    asked: list[set[str]] = []

    def fake_sweep_sharpness(out, c, *, seeds, runs):
        assert c == cfg and list(seeds) == [0]
        asked.append(set(runs))
        return pd.DataFrame([dict(run=r, term=t, repeat=k, samples=c.num_envs * c.num_steps,
                                  ascent_steps=c.ascent_steps, max_products=c.max_products,
                                  eigen_tol=c.eigen_tol, ascent_starts=c.ascent_starts,
                                  rollout_batch_size=32 * int(r.split("-n")[1].split("x")[0]),
                                  **dict.fromkeys(eps_columns(c.eps_values), 0.1 * k))
                             for r in sorted(runs) for t in ("policy", "value")
                             for k in range(c.repeats)])

    monkeypatch.setattr(study_run, "sweep_sharpness", fake_sweep_sharpness)
    monkeypatch.setattr(study_run, "classify_run",
                        lambda p: ("finished" if p.name in finished else "pending", None))
    path = study_parts(plan)[0].analysis_dir / SHARPNESS_FILE

    study_run.measure_study_sharpness(plan)  # nothing finished: nothing measured or written
    assert asked == [] and not path.exists()
    finished |= {names[(2, 0)], names[(1, 1)]}  # seed 1 is never measured
    study_run.measure_study_sharpness(plan)
    assert asked == [{names[(2, 0)]}]
    study_run.measure_study_sharpness(plan)  # nothing new: nothing measured again
    assert len(asked) == 1
    finished |= {names[(1, 0)], names[(4, 0)]}
    study_run.measure_study_sharpness(plan)
    assert asked[-1] == {names[(1, 0)], names[(4, 0)]}
    df = pd.read_csv(path)
    assert list(df.drop_duplicates("run")["run"]) == [names[(n, 0)] for n in (1, 2, 4)]
    assert len(df) == 3 * 2 * cfg.repeats

    # Rows measured with other settings (or missing a repeat) are measured again.
    df.loc[df["run"] == names[(1, 0)], "samples"] = 7
    df.to_csv(path, index=False)
    study_run.measure_study_sharpness(plan)
    assert asked[-1] == {names[(n, 0)] for n in (1, 2, 4)}
    df = pd.read_csv(path)
    df[~((df["run"] == names[(4, 0)]) & (df["repeat"] == 1))].to_csv(path, index=False)
    study_run.measure_study_sharpness(plan)
    assert asked[-1] == {names[(4, 0)]} and len(pd.read_csv(path)) == 3 * 2 * cfg.repeats
    df = pd.read_csv(path)
    df[~((df["run"] == names[(2, 0)]) & (df["term"] == "value"))].to_csv(path, index=False)
    study_run.measure_study_sharpness(plan)  # one term missing: that run again
    assert asked[-1] == {names[(2, 0)]} and len(pd.read_csv(path)) == 3 * 2 * cfg.repeats
