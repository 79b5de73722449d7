"""Order flow (T2): Cont–Kukanov–Stoikov order-flow imbalance on every MBP-10 update.

OFI event of book update n (best bid Pb/qb, best ask Pa/qa *after* the update; n−1 is the
previous record of the same buffer, in ts_recv order):

    e_n = 1{Pb_n ≥ Pb_{n−1}}·qb_n − 1{Pb_n ≤ Pb_{n−1}}·qb_{n−1}
        − 1{Pa_n ≤ Pa_{n−1}}·qa_n + 1{Pa_n ≥ Pa_{n−1}}·qa_{n−1}

positive = buying pressure (bid queue growing / ask queue shrinking). The first record of a
buffer contributes 0 (its predecessor is unknown). An empty side (Databento UNDEF price →
NaN) is treated as a price of −∞ (bid) / +∞ (ask) with size 0, so a vanishing best bid
counts as −qb_{n−1} and a vanishing best ask as +qa_{n−1}. Every update is used (no
thinning); records that do not touch the top of book contribute exactly 0.

Each event is stamped with the record's *effective* time (running max of ts_event, see
`asof.effective_ts`); window sums at t cover stamps in (t − w, t]. OFI values are integers,
so all sums are exact (int64 prefix sums).

Availability: a window (t − w, t] is computable only when the buffer's first record is
stamped ≤ t − w (the book state at the window's start is known); otherwise null.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from .asof import (
    NS_PER_S,
    as_times,
    banded_window_sums,
    effective_ts,
    float_series,
    prefix_sum,
    query_arrays,
    query_frame,
    seconds_name,
    window_sum,
)
from .registry import FeatureDef, feature

DEFAULT_WINDOWS_S: tuple[int, ...] = (30, 60, 120, 300)
DEFAULT_ACCEL_WINDOW_S = 60
DEFAULT_NEAR_BAND_PT = 2.0
DEFAULT_NEAR_WINDOW_S = 60


def ofi_per_update(book: pl.DataFrame) -> pl.DataFrame:
    """OFI event e_n of every MBP-10 record → DataFrame[ts_event (effective, Int64), ofi (Int64)].

    One output row per input record, in input (ts_recv) order, so it aligns row by row with
    `book`. `ts_event` is the running max of the records' ts_event.
    """
    n = book.height
    ts = effective_ts(book["ts_event"].cast(pl.Int64)) if n else np.zeros(0, np.int64)
    e = np.zeros(n, dtype=np.int64)
    if n > 1:
        pb, qb = _side(book, "bid_px_00", "bid_sz_00", -np.inf)
        pa, qa = _side(book, "ask_px_00", "ask_sz_00", np.inf)
        b0, b1, a0, a1 = pb[:-1], pb[1:], pa[:-1], pa[1:]
        e[1:] = (
            np.where(b1 >= b0, qb[1:], 0)
            - np.where(b1 <= b0, qb[:-1], 0)
            - np.where(a1 <= a0, qa[1:], 0)
            + np.where(a1 >= a0, qa[:-1], 0)
        )
    return pl.DataFrame({"ts_event": ts, "ofi": e}, schema={"ts_event": pl.Int64, "ofi": pl.Int64})


def _side(book: pl.DataFrame, px_col: str, sz_col: str, empty_px: float) -> tuple[np.ndarray, np.ndarray]:
    px = book[px_col].cast(pl.Float64).fill_null(np.nan).to_numpy()
    sz = book[sz_col].cast(pl.Int64).fill_null(0).to_numpy()
    empty = np.isnan(px)
    if empty.any():
        px = np.where(empty, empty_px, px)
        sz = np.where(empty, 0, sz)
    return px, sz


def ofi_features(
    ofi_events: pl.DataFrame,
    grid_times,
    windows_s: Sequence[float] = DEFAULT_WINDOWS_S,
    accel_window_s: float = DEFAULT_ACCEL_WINDOW_S,
) -> pl.DataFrame:
    """Market-wide integrated OFI at each grid time.

    Columns: t_ns, ofi_{w}s = Σ e_n over (t − w, t] for each w in windows_s, and
    ofi_accel_{a}s = ofi_{a}s(t) − ofi_{a}s(t − a) (a = accel_window_s). Null when the
    buffer does not reach back to the start of the needed span (t − w, resp. t − 2a).
    """
    t = as_times(grid_times)
    ts = as_times(ofi_events["ts_event"])
    prefix = prefix_sum(ofi_events["ofi"].cast(pl.Int64).to_numpy())
    first = ts[0] if len(ts) else None
    cols = [pl.Series("t_ns", t, dtype=pl.Int64)]
    for w in windows_s:
        w_ns = int(round(w * NS_PER_S))
        cols.append(float_series(f"ofi_{seconds_name(w)}", window_sum(ts, prefix, t, w_ns), _covered(first, t - w_ns)))
    a_ns = int(round(accel_window_s * NS_PER_S))
    accel = window_sum(ts, prefix, t, a_ns) - window_sum(ts, prefix, t - a_ns, a_ns)
    cols.append(float_series(f"ofi_accel_{seconds_name(accel_window_s)}", accel, _covered(first, t - 2 * a_ns)))
    return pl.DataFrame(cols)


def near_level_ofi(
    book: pl.DataFrame,
    ofi_events: pl.DataFrame,
    queries: pl.DataFrame,
    band_pt: float = DEFAULT_NEAR_BAND_PT,
    window_s: float = DEFAULT_NEAR_WINDOW_S,
) -> pl.DataFrame:
    """Toward-level OFI near each queried level.

    ofi_near_level_{w}s = dir_sign · Σ e_n over updates stamped in (t − w, t] whose mid
    *after* the update, (bid_px_00 + ask_px_00)/2, lies in [L − band, L + band] (updates
    with an empty side have no mid and never count). Positive = pressure toward the level
    (buying into resistance for UP, selling into support for DOWN). Null when the buffer
    does not reach back to t − w or the level is null. Output: query keys + the column.
    """
    if book.height != ofi_events.height:
        raise ValueError("ofi_events must be ofi_per_update(book) (one row per book record)")
    t, level, sign = query_arrays(queries)
    ts = as_times(ofi_events["ts_event"])
    w_ns = int(round(window_s * NS_PER_S))
    bid = book["bid_px_00"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    ask = book["ask_px_00"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    mid = (bid + ask) / 2.0
    e = ofi_events["ofi"].cast(pl.Int64).to_numpy()
    sums = banded_window_sums(ts, mid, e, t, level - band_pt, level + band_pt, w_ns)[:, 0]
    valid = _covered(ts[0] if len(ts) else None, t - w_ns) & ~np.isnan(level) & (sign != 0)
    return query_frame(queries, [float_series(f"ofi_near_level_{seconds_name(window_s)}", sums * sign, valid)])


def _covered(first_ts, start: np.ndarray) -> np.ndarray:
    """True where the buffer's first record is stamped at or before the window start."""
    if first_ts is None:
        return np.zeros(len(start), dtype=bool)
    return first_ts <= start


FEATURES: list[FeatureDef] = [
    *[
        feature(
            f"ofi_{w}s",
            "order_flow",
            "T2",
            "contracts",
            f"{w}s",
            f"net order-flow imbalance at the best bid/ask over the last {w} s (+ = buying pressure)",
        )
        for w in DEFAULT_WINDOWS_S
    ],
    feature(
        "ofi_accel_60s",
        "order_flow",
        "T2",
        "contracts",
        "120s",
        "last minute's OFI minus the minute before's (+ = buying pressure building)",
    ),
    feature(
        "ofi_near_level_60s",
        "order_flow",
        "T2",
        "contracts",
        "60s",
        "OFI over the last 60 s while the mid was within 2 pt of the level, signed toward the level",
        level_relative=True,
    ),
]
