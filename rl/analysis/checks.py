"""Argument and table checks shared by the analyses: each failure is a ValueError that names
the argument and its valid range, or the missing column and the columns present, so that a
bad call stops with the fix instead of a NaN or a raw KeyError further on."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

__all__ = ["check_count", "check_open_unit", "check_positive", "require_table"]


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_open_unit(value: Any, name: str, what: str) -> None:
    """``value`` in (0, 1), e.g. a confidence level (95 is not 0.95)."""
    if not (_is_real(value) and 0.0 < value < 1.0):
        raise ValueError(f"{name} must be in (0, 1) ({what}), got {value!r}")


def check_positive(value: Any, name: str, what: str) -> None:
    """``value`` finite and > 0."""
    if not (_is_real(value) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0 ({what}), got {value!r}")


def check_count(value: Any, name: str, what: str) -> None:
    """``value`` an integer >= 1."""
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"{name} must be an integer >= 1 ({what}), got {value!r}")


def require_table(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """``df`` has rows and every one of ``columns``; ``what`` says what the table is."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; columns present: "
                         f"{[str(c) for c in df.columns]}")
    if df.empty:
        raise ValueError(f"{what} is empty: it has no rows to work on")
