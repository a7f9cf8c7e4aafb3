"""Compare games with each other and with supervised learning (``rlscale compare``).

The study in three steps: run (or reuse) its runs, write results.csv from the study
directory, render the report from results.csv as written. The study's public names are
gathered here; each lives in its own module (suites, plan, run, results, headline,
sections). See docs/study.md for the full description.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rl.runs.files import atomic_write_text
from rl.study.crosstask import crosstask_rows
from rl.study.headline import headline_table, plot_summary
from rl.study.plan import (
    GamePlan,
    Overrides,
    StudyPlan,
    build_plan,
    describe_plan,
    study_parts,
)
from rl.study.results import (
    RESULT_COLUMNS,
    collect_results,
    finalize_table,
    read_results_table,
)
from rl.study.run import check_study, measure_study_sharpness, run_study
from rl.study.sections import write_study_report
from rl.study.settings import (
    CITED,
    CITED_LABEL,
    PRESET_NAMES,
    STUDY_PRESETS,
    SUITES,
    NoiseRuns,
    SweepGrid,
)

__all__ = [
    "CITED",
    "CITED_LABEL",
    "PRESET_NAMES",
    "RESULT_COLUMNS",
    "STUDY_PRESETS",
    "SUITES",
    "GamePlan",
    "NoiseRuns",
    "Overrides",
    "StudyOutcome",
    "StudyPlan",
    "SweepGrid",
    "build_plan",
    "check_study",
    "collect_results",
    "compare",
    "describe_plan",
    "headline_table",
    "plot_summary",
    "read_results_table",
    "run_study",
    "study_parts",
    "write_study_report",
]


@dataclass
class StudyOutcome:
    results: pd.DataFrame
    headline: pd.DataFrame
    results_csv: Path
    report_html: Path
    report_md: Path


def compare(plan: StudyPlan, *, quiet: bool = False, console=None,
            train: bool = True) -> StudyOutcome:
    """Run the study (reusing finished parts), write results.csv, then the report.

    ``train=False`` runs and measures nothing: the report of the runs as they are now (a
    study whose runs still train elsewhere; unfinished runs stay out of the fits)."""
    supervised = None
    if train:
        supervised = run_study(plan, quiet=quiet, console=console)["supervised"]
        measure_study_sharpness(plan)
    else:
        check_study(plan)
    df, fits = collect_results(plan, supervised_summary=supervised)
    df = finalize_table([*df.to_dict("records"), *crosstask_rows(df)])
    out = Path(plan.out)
    atomic_write_text(out / "results.csv", df.to_csv(index=False))
    # The report is rendered from the table as written (read back), never from memory.
    df = read_results_table(out / "results.csv")
    html_path, md_path = write_study_report(plan, df, fits)
    return StudyOutcome(df, headline_table(df), out / "results.csv", html_path, md_path)
