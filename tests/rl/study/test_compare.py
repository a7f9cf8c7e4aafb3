"""Tests for ``rlscale compare``: plans (suites, presets, overrides), the report's numbers
against the results table and the runs it came from, reuse on a second invocation, and the
HTML page in headless Chromium."""

from __future__ import annotations

import html.parser
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rl.cli import main
from rl.study.headline import headline_table
from rl.study.plan import Overrides, build_plan, study_parts
from rl.study.report import format_value, round_sig
from rl.study.results import RESULT_COLUMNS, read_results_table
from rl.study.settings import CITED, CITED_LABEL, SUITES

# --------------------------------------------------------------------------------------
# Fast: number formatting and plans
# --------------------------------------------------------------------------------------


def test_format_value_round_trips_rounded_values():
    rng = np.random.default_rng(0)
    values = np.concatenate([10.0 ** rng.uniform(-6, 9, 400), -(10.0 ** rng.uniform(-3, 5, 50)),
                             [0.0, 1.0, 9999.5, 10_000.0, 123_456.0, 2.4e7]])
    for v in values:
        r = round_sig(v)
        text = format_value(r)
        assert float(text.replace(",", "")) == r, (v, r, text)
    assert format_value(math.nan) == "-" and format_value(math.inf) == "inf"
    assert format_value(1234.0) == "1,234" and format_value(24_000_000.0) == "24,000,000"


def test_atari_paper_suite_grid_and_presets():
    quick = build_plan(suite="atari-paper", preset="cpu-quick", out="unused")
    assert [g.game for g in quick.games] == list(SUITES["atari-paper"].games)
    assert all(g.sweep is None and g.noise is not None for g in quick.games)  # noise only
    gpu = build_plan(suite="atari-paper", preset="gpu", out="unused")
    for g in gpu.games:
        batch = [n * g.sweep.num_steps for n in g.sweep.num_envs]
        assert g.sweep.num_steps == 128 and min(g.sweep.num_envs) == 8
        assert max(g.sweep.num_envs) >= 512 and min(batch) == 1024
        assert g.targets and g.noise.num_envs * g.noise.num_steps == 1024
    # The demo: a CartPole sweep and two MinAtar games with noise-scale runs.
    demo = build_plan(suite="demo", preset="cpu-quick", out="unused")
    swept = [g.game for g in demo.games if g.sweep is not None]
    minatar = [g.game for g in demo.games if g.family == "minatar" and g.noise is not None]
    assert swept == ["CartPole"] and len(minatar) >= 2
    assert demo.supervised is not None


def test_overrides_apply_and_specs_validate(tmp_path):
    ov = Overrides(sweep_games="CartPole", noise_games="MinAtar-Breakout", num_envs=[2, 4],
                   num_steps=16, seeds=3, targets=[50], budget=4096, noise_budget=2048,
                   gns_every=3, supervised=False, parallel=1)
    plan = build_plan(games=["cartpole", "MinAtar-Breakout"], preset="gpu", out=tmp_path,
                      overrides=ov)
    cart, minatar = plan.games
    assert cart.game == "CartPole" and cart.sweep.num_envs == (2, 4) and cart.noise is None
    assert cart.sweep.seeds == 3 and cart.targets == (50.0,) and cart.sweep.budget == 4096
    assert minatar.sweep is None and minatar.noise.budget == 2048
    assert minatar.noise.gns_every == 3 and plan.supervised is None
    parts = {(p.kind, p.game): p.spec for p in study_parts(plan)}
    assert set(parts) == {("sweep", "CartPole"), ("noise", "MinAtar-Breakout")}
    assert parts[("noise", "MinAtar-Breakout")].train["network"] == "auto"
    assert parts[("sweep", "CartPole")].ppo["anneal_lr"] is False
    with pytest.raises(ValueError, match="suite"):
        build_plan(suite="nope")
    with pytest.raises(ValueError, match="not among"):
        build_plan(games=["CartPole"], out=tmp_path, overrides=Overrides(sweep_games="Pong"))


def test_compare_dry_run_starts_nothing(tmp_path, capsys):
    assert main(["compare", "--suite", "classic", "--dry-run", "--out", str(tmp_path / "s")]) == 0
    assert "dry run" in capsys.readouterr().out
    assert not (tmp_path / "s").exists()


# --------------------------------------------------------------------------------------
# A miniature study, end to end
# --------------------------------------------------------------------------------------

MINI = ["compare", "CartPole", "MinAtar-Breakout", "--sweep-games", "CartPole",
        "--noise-games", "MinAtar-Breakout", "--num-envs", "2,4,8,16", "--num-steps", "32",
        "--seeds", "1", "--targets", "40,50", "--budget", "6000", "--noise-budget", "8192",
        "--noise-num-steps", "32", "--gns-every", "1", "--supervised-epochs", "2",
        "--n-boot", "50", "--parallel", "2"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "mini"
    assert main([*MINI, "--out", str(out), "--quiet"]) == 0
    return out


class _Page(html.parser.HTMLParser):
    """Tables by id (rows of cell texts, with the row's class), visible text, img srcs."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[tuple[str, list[str]]]] = {}
        self.text: list[str] = []
        self.imgs: list[str] = []
        self.tags: set[str] = set()
        self._table = self._row = self._cell = None
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag in ("style", "script", "title"):
            self._skip += 1
        elif tag == "table":
            self._table = self.tables.setdefault(a.get("id", f"t{len(self.tables)}"), [])
        elif tag == "tr" and self._table is not None:
            self._row = (a.get("class", ""), [])
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.imgs.append(a.get("src", ""))

    def handle_endtag(self, tag):
        if tag in ("style", "script", "title"):
            self._skip -= 1
        elif tag in ("td", "th") and self._cell is not None:
            self._row[1].append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self._table.append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._skip:
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?(?:e[+-]?\d+)?|inf")


def _numbers(text: str) -> list[float]:
    return [float(t.replace(",", "")) for t in NUMBER.findall(text)]


def _with_roundings(values) -> set[float]:
    """``values`` and each rounded to 1 to 4 significant digits: the page prints a number
    with the digits its interval allows (``format_interval``), never another number."""
    out = set()
    for v in values:
        out.add(v)
        if math.isfinite(v):
            out.update(abs(round_sig(v, k)) for k in range(1, 5))
    return out


def _table_numbers(df: pd.DataFrame) -> set[float]:
    """Every number of the results table: numeric cells and numbers inside text cells
    (absolute values: the page's text is tokenized without signs), and their roundings."""
    out = set()
    for col in df.columns:
        for v in df[col]:
            if isinstance(v, str):
                out.update(_numbers(v))
            elif v == v:
                out.add(abs(float(v)))
    return _with_roundings(out)


@pytest.mark.slow
def test_report_numbers_are_the_results_table(study):
    df = read_results_table(study / "results.csv")
    assert list(df.columns) == RESULT_COLUMNS
    page = _parse(study / "report.html")

    # 1. The full table on the page is results.csv, cell by cell.
    rows = page.tables["results"]
    header, body = rows[0][1], [cells for _, cells in rows[1:]]
    assert header == RESULT_COLUMNS and len(body) == len(df)
    for (i, rec), cells in zip(df.iterrows(), body, strict=True):
        for col, text in zip(RESULT_COLUMNS, cells, strict=True):
            v = rec[col]
            if isinstance(v, str):
                assert text == v, (i, col)
            elif v != v:
                assert text == "-", (i, col, text)
            else:
                assert float(text.replace(",", "")) == v, (i, col, text, v)

    # 2. Every number in the headline comes from that task's rows of the table.
    head = page.tables["headline"]
    cols = head[0][1]
    for _, cells in head[1:]:
        task = cells[cols.index("task")]
        mine = df[df["task"] == task]
        allowed = _with_roundings({abs(float(v)) for c in ("target", "value", "lo", "hi")
                                   for v in mine[c] if v == v})
        for col, text in zip(cols, cells, strict=True):
            if col in ("reference", "task"):
                continue
            for x in _numbers(text):
                assert x in allowed, (task, col, text)

    # 3. No number anywhere in the page's visible text that is not in the table.
    known = _table_numbers(df)
    stray = [x for x in _numbers(" ".join(page.text)) if x not in known]
    assert not stray, stray

    # 4. Self-contained: plots embedded as PNG data, no script, no external resource.
    raw = (study / "report.html").read_text(encoding="utf-8")
    assert len(page.imgs) >= 3 and all(s.startswith("data:image/png;base64,") for s in page.imgs)
    assert "script" not in page.tags and "http://" not in raw and "https://" not in raw
    assert (study / "report.md").exists()


@pytest.mark.slow
def test_cited_values_are_labelled_and_never_mixed(study):
    df = read_results_table(study / "results.csv")
    cited = df[df["source"] == "cited"]
    measured = df[df["source"] == "measured"]
    assert set(df["source"]) == {"cited", "measured"}
    assert set(cited["task"]) == {c[0] for c in CITED}
    assert not set(cited["task"]) & set(measured["task"])
    assert (cited["reference"] == "McCandlish et al. 2018, Table 1").all()
    assert (measured["reference"] == "").all()
    mnist = cited[(cited["task"] == "MNIST")].set_index("quantity")["value"]
    assert mnist["b_crit"] == 200 and mnist["b_simple"] == 900
    page = _parse(study / "report.html")
    for table in ("headline", "results"):
        rows = page.tables[table]
        src = rows[0][1].index("source")
        for cls, cells in rows[1:]:
            assert (cls == "cited") == (cells[src] == "cited")
    raw = (study / "report.html").read_text(encoding="utf-8")
    assert CITED_LABEL in raw


@pytest.mark.slow
def test_results_match_the_runs_they_came_from(study):
    df = read_results_table(study / "results.csv").set_index(["task", "quantity", "term"])

    def value(task, quantity, term=""):
        return df.loc[(task, quantity, term)]

    # Noise-scale run: the sweep machinery's run-averaged B_simple (one run) is ours.
    noise = pd.read_csv(study / "noise" / "MinAtar-Breakout" / "results.csv")
    assert len(noise) == 1 and noise["status"].iloc[0] == "finished"
    for term in ("total", "value"):
        ours = value("MinAtar-Breakout", "b_simple", term)
        theirs = round_sig(noise[f"b_simple_{term}"].iloc[0])
        assert ours["value"] == theirs or (math.isnan(ours["value"]) and math.isnan(theirs))
        assert ours["n"] == noise["gns_measurements"].iloc[0]
    # Sweep: B_crit rows are fit.csv's.
    fit = pd.read_csv(study / "sweeps" / "CartPole" / "fit.csv")
    crit = df.xs("b_crit", level="quantity").loc["CartPole"].reset_index()
    assert sorted(crit["target"]) == sorted(fit["target"])
    for _, f in fit.iterrows():
        row = crit[crit["target"] == f["target"]].iloc[0]
        if isinstance(f["bound"], str) and f["bound"]:  # a bound: the interval's end
            assert math.isnan(row["value"])
            assert round_sig(f["b_crit_bound"]) == (row["lo"] if f["bound"] == ">=" else
                                                    row["hi"])
            continue
        for ours, theirs in (("value", "b_crit"), ("lo", "b_crit_lo"), ("hi", "b_crit_hi")):
            expected = round_sig(f[theirs])
            assert row[ours] == expected or (math.isnan(row[ours]) and math.isnan(expected))
    # B_simple against the return: MinAtar-Breakout from its noise-scale run; CartPole,
    # which has none here, from its sweep's runs, every batch size pooled.
    from rl.analysis.power_laws import noise_scale_power_laws
    from rl.runs.metrics import load_metrics

    laws = df.xs("b_simple_exponent", level="quantity")
    assert laws.loc["MinAtar-Breakout"]["note"].str.contains("noise-scale runs").all()
    cart = laws.loc["CartPole"]
    assert len(cart) == 3 and cart["note"].str.contains("sweep runs, every batch size").all()
    runs = [load_metrics(r) for r in sorted((study / "sweeps" / "CartPole" / "runs").iterdir())]
    measured = [m[m["gns/split_envs"].notna()] for m in runs]
    assert all(len(m) and (m["gns/split_envs"] == 1).all() for m in measured)  # 2+ envs
    mine, _ = noise_scale_power_laws("CartPole", measured, n_boot=50)
    for _, r in mine.iterrows():  # the same fits (here refused: the returns span < 2x)
        row = cart.loc[r["term"]]
        assert row["n"] == r["n_points"] and (row["value"] == round_sig(r["exponent"])
                                              or not r["ok"] and math.isnan(row["value"]))
    # Supervised reference: rl.measure.supervised's own summary.
    summary = json.loads(next((study / "supervised").glob("*/summary.json")).read_text())
    sup = value("digits (mlp)", "b_simple", "total")
    assert sup["value"] == round_sig(summary["b_simple_run"])
    assert sup["lo"] == round_sig(summary["b_simple_run_lower"])
    assert sup["unit"] == "training examples"


@pytest.mark.slow
def test_second_invocation_reuses_finished_runs(study, capsys):
    def starts():
        n = 0
        for events in study.glob("*/*/events.jsonl"):
            n += sum(json.loads(line)["event"] in ("start", "resume")
                     for line in events.read_text().splitlines())
        return n

    before = starts()
    sup_mtime = next((study / "supervised").glob("*/summary.json")).stat().st_mtime
    table = (study / "results.csv").read_text()
    assert main([*MINI, "--out", str(study)]) == 0  # not quiet: the progress display
    err = capsys.readouterr().err
    assert "runs done" in err and "finished, reused" in err
    assert starts() == before
    assert next((study / "supervised").glob("*/summary.json")).stat().st_mtime == sup_mtime
    assert (study / "results.csv").read_text() == table


# --------------------------------------------------------------------------------------
# The page in a real browser
# --------------------------------------------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.mark.slow
def test_report_renders_in_headless_chromium(study, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium installed (e.g. `apt-get install -y chromium`); the report "
                    "cannot be rendered in a browser here")
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
         "--v=0", f"--screenshot={shot}", "--window-size=1400,3000",
         (study / "report.html").resolve().as_uri()],
        capture_output=True, text=True, timeout=900,  # a guard against a hung browser only
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-2000:]
    # Page errors: console messages (the page has no script), failed loads.
    bad = [line for line in log.splitlines()
           if "CONSOLE" in line or "Uncaught" in line or "net::ERR" in line
           or "Failed to load" in line or "Not allowed to load" in line]
    assert not bad, bad
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape == (3000, 1400, 3)
    nonwhite = (img < 245).any(axis=2).mean()
    colors = len(np.unique(img.reshape(-1, 3), axis=0))
    # Plot pixels: saturated colours (markers, lines), not table tints or text. The first
    # 3000 px hold one figure, the summary (the others are in closed <details> blocks).
    rgb = img.astype(int)
    saturated = ((rgb.max(axis=2) - rgb.min(axis=2)) > 80).sum()
    assert nonwhite > 0.05, nonwhite
    assert colors > 1000, colors
    assert saturated > 1000, saturated
    raw = (study / "report.html").read_text(encoding="utf-8")
    assert raw.index('class="verdict"') < raw.index("<img") < raw.index('id="headline"') \
        < raw.index("<details>")


# --------------------------------------------------------------------------------------
# A stored sweep as a game's critical-batch sweep (--sweep-dir)
# --------------------------------------------------------------------------------------


def _stored_cartpole_sweep(path: Path) -> Path:
    """sweep.json of a CartPole sweep, as `rlscale sweep` writes it before training."""
    from rl.sweeps.spec import parse_spec, plan_runs
    from rl.sweeps.state import write_sweep_state

    spec = parse_spec(dict(env="CartPole", num_envs=[1, 2], num_steps=32, lrs=[1e-3], seeds=2,
                           targets=[40, 60], budget=2048, out=str(path)))
    path.mkdir(parents=True)
    write_sweep_state(spec, plan_runs(spec))
    return path


def test_a_stored_sweep_keeps_its_settings_and_gets_its_own_analysis_folder(tmp_path):
    stored = _stored_cartpole_sweep(tmp_path / "elsewhere" / "cartpole")
    ov = Overrides(sweep_dirs={"cartpole": str(stored)}, num_envs=[4, 8], targets=[-150],
                   supervised=False, noise_games="none")
    plan = build_plan(games=["CartPole", "Acrobot"], out=tmp_path / "study", overrides=ov)
    cart, acrobot = plan.games
    assert cart.sweep_dir == str(stored) and cart.sweep is None
    assert cart.targets == (40.0, 60.0)  # the stored sweep's, not --targets
    assert acrobot.sweep is not None and acrobot.sweep.num_envs == (4, 8)  # overrides apply
    parts = {(p.kind, p.game): p for p in study_parts(plan)}
    part = parts[("sweep", "CartPole")]
    assert part.out == stored and part.spec.num_envs == [1, 2] and part.spec.parallel == \
        plan.parallel
    assert part.analysis_dir == tmp_path / "study" / "stored" / "sweep" / "CartPole"
    assert parts[("sweep", "Acrobot")].analysis_dir == parts[("sweep", "Acrobot")].out
    assert json.loads(json.dumps(plan.to_dict()))["games"][0]["sweep_dir"] == str(stored)


def test_bad_sweep_dirs_are_named(tmp_path, capsys):
    stored = _stored_cartpole_sweep(tmp_path / "cartpole")
    with pytest.raises(ValueError, match="no sweep there"):
        build_plan(games=["CartPole"], out=tmp_path / "s",
                   overrides=Overrides(sweep_dirs={"CartPole": str(tmp_path / "nothing")}))
    with pytest.raises(ValueError, match="not among the study's games"):
        build_plan(games=["Acrobot"], out=tmp_path / "s",
                   overrides=Overrides(sweep_dirs={"CartPole": str(stored)}))
    with pytest.raises(ValueError, match="holds a sweep of CartPole, not runs of .*Acrobot"):
        build_plan(games=["CartPole", "Acrobot"], out=tmp_path / "s",
                   overrides=Overrides(sweep_dirs={"Acrobot": str(stored)}))
    for bad in ("CartPole", "=dir", "CartPole="):
        with pytest.raises(SystemExit):
            main(["compare", "CartPole", "--sweep-dir", bad, "--dry-run"])
        assert "GAME=DIR" in capsys.readouterr().err
    assert main(["compare", "CartPole", "--sweep-dir", f"CartPole={stored}", "--sweep-dir",
                 f"CartPole={stored}", "--dry-run", "--out", str(tmp_path / "s")]) == 2
    assert "twice" in capsys.readouterr().err
    with pytest.raises(ValueError, match="several batch sizes"):  # a sweep: no noise runs
        build_plan(games=["CartPole"], out=tmp_path / "s",
                   overrides=Overrides(noise_dirs={"CartPole": str(stored)}))
    with pytest.raises(ValueError, match="twice"):
        build_plan(games=["CartPole"], out=tmp_path / "s",
                   overrides=Overrides(sweep_dirs={"CartPole": str(stored),
                                                   "cartpole": str(stored)}))
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_a_study_reads_stored_runs_without_training_or_writing_into_them(study, tmp_path):
    sweep, noise = study / "sweeps" / "CartPole", study / "noise" / "MinAtar-Breakout"

    def files(d):
        return {p: p.stat().st_mtime for p in (d / "runs").rglob("*") if p.is_file()}

    runs_before = {**files(sweep), **files(noise)}
    fit_before = (sweep / "fit.csv").read_text()
    events_before = {d: (d / "events.jsonl").read_text().splitlines() for d in (sweep, noise)}
    out = tmp_path / "second"
    assert main(["compare", "CartPole", "MinAtar-Breakout", "--sweep-dir", f"CartPole={sweep}",
                 "--noise-dir", f"MinAtar-Breakout={noise}", "--noise-games", "none",
                 "--no-supervised", "--n-boot", "50", "--out", str(out), "--quiet"]) == 0
    for d, before in events_before.items():
        new = [json.loads(x)["event"] for x in
               (d / "events.jsonl").read_text().splitlines()[len(before):]]
        assert "start" not in new and "resume" not in new and "skip" in new, d
    assert {**files(sweep), **files(noise)} == runs_before
    assert (sweep / "fit.csv").read_text() == fit_before  # the analysis went to the study
    assert (out / "stored" / "sweep" / "CartPole" / "fit.csv").exists()
    assert (out / "stored" / "sweep" / "CartPole" / "sharpness.csv").exists()
    assert list((out / "stored" / "noise" / "MinAtar-Breakout").glob("*.png"))
    assert not (out / "sweeps").exists() and not (out / "noise").exists()
    first, second = (read_results_table(d / "results.csv") for d in (study, out))
    cols = ["task", "quantity", "term", "target", "value", "lo", "hi", "n"]
    for task, quantities in (("CartPole", ["b_crit"]),
                             ("MinAtar-Breakout", ["b_simple", "rollout_batch_size"])):
        same = [d[(d["task"] == task) & d["quantity"].isin(quantities)][cols]
                .reset_index(drop=True) for d in (first, second)]
        assert len(same[0]) >= 2
        pd.testing.assert_frame_equal(*same)  # same runs, same bootstrap: the same numbers


def test_report_only_trains_nothing(tmp_path):
    stored = _stored_cartpole_sweep(tmp_path / "cartpole")  # planned, nothing trained yet
    out = tmp_path / "study"
    assert main(["compare", "CartPole", "--sweep-dir", f"CartPole={stored}", "--noise-games",
                 "none", "--no-supervised", "--report-only", "--out", str(out),
                 "--quiet"]) == 0
    assert not (stored / "runs").exists() and not (stored / "events.jsonl").exists()
    df = read_results_table(out / "results.csv")
    assert (out / "report.md").exists() and (out / "study.json").exists()
    assert df[(df["source"] == "measured") & (df["quantity"] == "b_crit")]["value"].isna().all()
    head = headline_table(df).set_index("task")
    assert head.loc["CartPole", "B_crit [interval]"] == "no fit yet (0 of 4 runs finished)"
    assert head.loc["CartPole", "unit"] == "agent steps"


@pytest.mark.slow
def test_report_only_reports_the_same_numbers_without_running(study, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(study, copy)
    (copy / "results.csv").unlink()
    events = {p: p.read_text() for p in copy.glob("*/*/events.jsonl")}
    assert main([*MINI, "--out", str(copy), "--report-only", "--quiet"]) == 0
    assert {p: p.read_text() for p in copy.glob("*/*/events.jsonl")} == events  # no sweep ran
    assert (copy / "results.csv").read_text() == (study / "results.csv").read_text()
