"""A run's metrics.jsonl: encoding a row, reading the file back (torn and damaged lines),
and writing a row's scalars to TensorBoard. See docs/run-directory.md."""

from __future__ import annotations

import json
import math
import numbers
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from rl.runs.errors import RunDirError
from rl.runs.files import naming_file, read_json
from rl.runs.layout import METRICS_FILE, STATUS_FILE

__all__ = ["AGENT_STEPS", "EPISODES_TOTAL", "ITERATION", "LOSS_COLUMNS", "OBJECTIVE_TERMS",
           "RETURN_RECENT", "encode_metrics_row", "load_metrics", "log_scalars",
           "parse_metrics_lines", "tensorboard_tag"]

LOSS_COLUMNS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction",
                "grad_norm")
"""A PPO iteration's update statistics: metrics columns, TensorBoard group ``losses/``.
The one list of loss terms: every other list of them is taken from it."""

OBJECTIVE_TERMS = LOSS_COLUMNS[:3]
"""The terms of the PPO objective (policy_loss, value_loss, entropy): checked finite."""

ITERATION = "iteration"
"""The key of every metrics row (an integer; the last row of an iteration wins)."""
AGENT_STEPS = "agent_steps"
"""Environment steps taken so far, over all envs."""
EPISODES_TOTAL = "episodes_total"
"""Games finished so far."""
RETURN_RECENT = "return_recent"
"""The mean return of the last ``train.return_window`` finished games."""


def _plain(value: Any) -> Any:
    """json.dumps fallback: numpy / torch scalars and arrays become Python values."""
    for attr in ("item", "tolist"):
        fn = getattr(value, attr, None)
        if fn is not None:
            try:
                return fn()
            except (TypeError, ValueError, RuntimeError):
                continue
    raise TypeError(f"metrics value {value!r} of type {type(value).__name__} is not JSON")


def encode_metrics_row(row: Mapping[str, Any]) -> str:
    if "iteration" not in row:
        raise RunDirError("a metrics row needs an integer 'iteration' key")
    iteration = row["iteration"]
    if isinstance(iteration, bool) or not isinstance(iteration, numbers.Integral):
        raise RunDirError(f"metrics 'iteration' must be an integer, got {iteration!r}")
    row = {**row, "iteration": int(iteration)}
    line = json.dumps(row, default=_plain, allow_nan=True, separators=(",", ":"))
    if "\n" in line:  # json.dumps escapes newlines in strings; this cannot happen
        raise AssertionError("encoded metrics row spans lines")
    return line + "\n"


def parse_metrics_lines(
    path: Path, problems: list[str] | None = None
) -> list[tuple[int, str, dict[str, Any]]]:
    """(iteration, raw line, row) for every complete, parseable line of a metrics file.

    A torn final line (crash mid-append) is left out; an unparseable line elsewhere is left
    out too. Each left-out line is described in ``problems`` when a list is given, else
    unparseable lines (not a torn tail) are warned about.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    # What follows the last b"\n" is b"" for a complete file, else a torn last line (the
    # row being written when the process died): it is dropped here.
    lines = data.split(b"\n")
    complete = lines[:-1]
    if lines[-1].strip() and problems is not None:
        problems.append(f"{path}:{len(lines)}: torn last line (no newline at its end)")
    rows = []
    for lineno, raw in enumerate(complete, start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
            row = json.loads(text)
            iteration = row["iteration"]
            if isinstance(iteration, bool) or not isinstance(iteration, int):
                raise TypeError("iteration is not an integer")
        except (UnicodeDecodeError, ValueError, TypeError, KeyError) as err:
            message = f"{path}:{lineno}: unreadable metrics line ({err})"
            if problems is not None:
                problems.append(message)
            else:
                warnings.warn(f"skipping {message}", stacklevel=3)
            continue
        rows.append((iteration, text, row))
    return rows


def _run_finished(metrics_path: Path) -> bool:
    try:
        status = read_json(metrics_path.parent / STATUS_FILE)
    except (OSError, ValueError):
        return False
    return isinstance(status, dict) and status.get("state") == "finished"


def load_metrics(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Load ``metrics.jsonl`` (or a run directory holding one) into a DataFrame.

    One row per iteration, sorted by ``iteration``; where an iteration occurs more than
    once, the last occurrence in the file wins. Keys missing from a row are NaN. A missing
    file gives an empty frame with an ``iteration`` column.

    Damaged lines: in a run that is not finished (its status.json next to the file says
    so) a torn last line is the row being written when the process died and is ignored,
    and an unreadable line elsewhere is skipped with a warning. In a finished run every
    row was complete, so either one is a ``RunDirError``: dropping it would silently change
    the results.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    problems: list[str] = []
    parsed = parse_metrics_lines(path, problems)
    if problems and _run_finished(path):
        raise RunDirError(
            f"the finished run's metrics are damaged: {'; '.join(problems[:3])}"
            + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
            + ". A finished run writes only whole rows, so the file was changed afterwards "
            "(e.g. a cut-short copy): restore it from the original run directory, or delete "
            "the damaged lines by hand to accept losing those rows."
        )
    for message in problems:
        if "torn last line" not in message:
            warnings.warn(f"skipping {message}", stacklevel=2)
    rows = [row for _, _, row in parsed]
    if not rows:
        return pd.DataFrame({"iteration": pd.Series([], dtype="int64")})
    latest: dict[int, dict[str, Any]] = {}
    for row in rows:
        latest.pop(row["iteration"], None)  # re-insert so that file order stays "last wins"
        latest[row["iteration"]] = row
    frame = pd.DataFrame.from_records(list(latest.values()))
    columns = ["iteration"] + [c for c in frame.columns if c != "iteration"]
    frame = frame[columns].sort_values("iteration", kind="stable").reset_index(drop=True)
    frame["iteration"] = frame["iteration"].astype("int64")
    return frame


# --------------------------------------------------------------------------- tensorboard


def tensorboard_tag(key: str) -> str:
    """A metrics column's TensorBoard tag: a column with a group keeps it (``gns/...``,
    ``adaptive/...``), the update statistics go to ``losses/``, the rest to ``charts/``
    (returns, steps, SPS, learning rate...)."""
    if "/" in key:
        return key
    return f"{'losses' if key in LOSS_COLUMNS else 'charts'}/{key}"


def log_scalars(writer: Any, row: Mapping[str, Any], step: int) -> int:
    """Write every finite numeric value of ``row`` to ``writer`` at ``step``, each under its
    column's ``tensorboard_tag`` (a section per group in TensorBoard). Booleans, strings,
    None and non-finite numbers are skipped. Returns the number of scalars written.
    """
    written = 0
    # TensorBoard's failed writes (disk full) name no file; the error should.
    with naming_file(getattr(writer, "log_dir", "the TensorBoard folder")):
        for key, value in row.items():
            if isinstance(value, bool) or value is None:
                continue
            if not isinstance(value, numbers.Real):
                item = getattr(value, "item", None)  # numpy / torch 0-d values
                try:
                    value = item() if item is not None else None
                except (TypeError, ValueError, RuntimeError):
                    value = None
                if isinstance(value, bool) or not isinstance(value, numbers.Real):
                    continue
            value = float(value)
            if not math.isfinite(value):
                continue
            writer.add_scalar(tensorboard_tag(str(key)), value, global_step=step)
            written += 1
    return written
