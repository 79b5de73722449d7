"""Measures behind the silver asset checks (pure functions)."""

from __future__ import annotations

import datetime as dt

import polars as pl

from ..lib.calendar import session_window

REQUIRED_STATE_COLUMNS = ("session", "t_ns", "level_kind", "level_price", "dir_sign", "tier", "spot", "atr", "d", "d_atr")
MAX_CLASS_SHARE = 0.97


def atr_plausibility(bars_1m: pl.DataFrame, session: dt.date) -> dict:
    """Median ATR-14 over bars that close in RTH (ES: typically 0.5–15 points)."""
    window = session_window(session)
    rth = bars_1m.filter(pl.col("bar_end_ns").is_between(window.rth_open_ns, window.close_ns) & pl.col("atr").is_not_null())
    median = rth["atr"].median() if rth.height else None
    return {"median_rth_atr": None if median is None else round(float(median), 4)}


def levels_ordered(static: dict) -> list[str]:
    """Problems with the static levels of one session (empty when PM_LOW ≤ PM_HIGH, OR_LOW ≤ OR_HIGH)."""
    problems = []
    for low, high in (("PM_LOW", "PM_HIGH"), ("OR_LOW", "OR_HIGH")):
        if low in static and high in static and static[low] > static[high]:
            problems.append(f"{low} {static[low]} > {high} {static[high]}")
    return problems


def state_nan_check(state: pl.DataFrame) -> dict:
    """NaN counts in any float column, null counts in the required columns (empty dict = clean)."""
    floats = [c for c, t in state.schema.items() if t in (pl.Float32, pl.Float64)]
    nan = state.select([pl.col(c).is_nan().sum().alias(c) for c in floats]).row(0, named=True) if floats else {}
    nulls = state.select([pl.col(c).is_null().sum().alias(c) for c in REQUIRED_STATE_COLUMNS]).row(0, named=True)
    problems = {f"nan:{c}": n for c, n in nan.items() if n}
    problems |= {f"null:{c}": n for c, n in nulls.items() if n}
    return problems


def label_share_check(per_session: dict[str, dict]) -> dict:
    """Pooled outcome shares over the run; fails when one class exceeds 97%."""
    totals = {label: sum(s.get(label, 0) for s in per_session.values()) for label in ("BREAK", "REJECT", "CHOP")}
    n = sum(totals.values())
    shares = {k: (v / n if n else None) for k, v in totals.items()}
    passed = n > 0 and all(share <= MAX_CLASS_SHARE for share in shares.values())
    return {"passed": passed, "shares": shares, "labels": n}
