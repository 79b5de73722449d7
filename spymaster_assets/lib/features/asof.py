"""Shared causal helpers for the silver feature families.

Every helper is a pure function of (events, query times, params) whose value at a query
time t reads only events with (effective) timestamp ≤ t, so a live engine holding a
trailing buffer of events reproduces the batch value exactly.

Exactness: window sums are differences of *integer* prefix sums (sizes, OFI and volumes
are integers), so a sum over (t − w, t] is bit-identical whether the prefix starts at
the beginning of the day or at the start of a trailing buffer. Float prefix sums would
differ in the last bits and are deliberately not used.

Time semantics: a window of length w at t is the half-open interval (t − w, t] — an event
stamped exactly t − w is excluded, one stamped exactly t is included.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

NS_PER_S = 1_000_000_000
_INT64_SAFE = np.iinfo(np.int64).max // 4


def as_times(times) -> np.ndarray:
    """Grid / query times as an int64 ns array (accepts a list, numpy array or polars Series)."""
    if isinstance(times, pl.Series):
        times = times.to_numpy()
    return np.ascontiguousarray(np.asarray(times, dtype=np.int64))


def effective_ts(ts_event) -> np.ndarray:
    """Running maximum of ts_event in record (ts_recv) order.

    A book record's state depends on every record before it, so record i is usable at t
    only when records 0..i all have ts_event ≤ t, i.e. when cummax(ts_event)[i] ≤ t. For a
    single instrument ts_event is (almost always) already monotone and this is the identity;
    the running max also makes the stamps sortable for `searchsorted`.
    """
    ts = as_times(ts_event)
    return np.maximum.accumulate(ts) if len(ts) else ts


def asof_index(sorted_ts: np.ndarray, times) -> np.ndarray:
    """Index of the last event with ts ≤ t for each t (−1 before the first event)."""
    return np.searchsorted(sorted_ts, as_times(times), side="right") - 1


def asof_values(sorted_ts: np.ndarray, values: np.ndarray, times) -> np.ndarray:
    """Value of the last event with ts ≤ t (NaN before the first event)."""
    idx = asof_index(sorted_ts, times)
    out = np.full(len(idx), np.nan)
    ok = idx >= 0
    out[ok] = np.asarray(values, dtype=np.float64)[idx[ok]]
    return out


def prefix_sum(values: np.ndarray) -> np.ndarray:
    """Cumulative sum with a leading zero row (int64 for integer input), along axis 0."""
    values = np.asarray(values)
    dtype = np.int64 if np.issubdtype(values.dtype, np.integer) or values.dtype == bool else np.float64
    out = np.zeros((len(values) + 1,) + values.shape[1:], dtype=dtype)
    np.cumsum(values, axis=0, dtype=dtype, out=out[1:])
    return out


def window_sum(sorted_ts: np.ndarray, prefix: np.ndarray, times, window_ns: int) -> np.ndarray:
    """Sum over events with t − window < ts ≤ t, from a `prefix_sum` of the event values."""
    times = as_times(times)
    hi = np.searchsorted(sorted_ts, times, side="right")
    lo = np.searchsorted(sorted_ts, times - int(window_ns), side="right")
    return prefix[hi] - prefix[lo]


def window_count(sorted_ts: np.ndarray, times, window_ns: int) -> np.ndarray:
    """Number of events with t − window < ts ≤ t."""
    times = as_times(times)
    return np.searchsorted(sorted_ts, times, side="right") - np.searchsorted(
        sorted_ts, times - int(window_ns), side="right"
    )


def banded_window_sums(
    ev_ts: np.ndarray,
    ev_px: np.ndarray,
    ev_vals: np.ndarray,
    q_t: np.ndarray,
    q_lo: np.ndarray,
    q_hi: np.ndarray,
    window_ns: int,
) -> np.ndarray:
    """Per query q: Σ ev_vals over events with q_t − w < ts ≤ q_t and q_lo ≤ px ≤ q_hi.

    ev_vals is an integer (n, k) array; the result is (n_queries, k) int64. Events with a
    NaN price never match; a query with a NaN bound matches nothing.

    Vectorized 2-D range sum: events are keyed by their distinct price, sorted by
    (price key, ts) and prefix-summed; a (key, time) pair maps to one sortable int64
    (key · span + relative ts), so each query is, per distinct price inside its band, two
    `searchsorted` lookups. Cost: O(n log n) once plus O(Σ distinct prices in the bands ·
    log n) — never a loop over events.
    """
    ev_ts = as_times(ev_ts)
    ev_px = np.asarray(ev_px, dtype=np.float64)
    ev_vals = np.asarray(ev_vals)
    if ev_vals.ndim == 1:
        ev_vals = ev_vals[:, None]
    q_t = as_times(q_t)
    q_lo = np.asarray(q_lo, dtype=np.float64)
    q_hi = np.asarray(q_hi, dtype=np.float64)
    nq, k = len(q_t), ev_vals.shape[1]
    out = np.zeros((nq, k), dtype=np.int64)
    keep = ~np.isnan(ev_px)
    if nq == 0 or not keep.any():
        return out
    lo_bound = np.nanmin(q_lo) if np.isfinite(q_lo).any() else np.inf
    hi_bound = np.nanmax(q_hi) if np.isfinite(q_hi).any() else -np.inf
    t_lo = int(q_t.min()) - int(window_ns)
    keep &= (ev_px >= lo_bound) & (ev_px <= hi_bound) & (ev_ts > t_lo) & (ev_ts <= int(q_t.max()))
    if not keep.any():
        return out
    ts, px, vals = ev_ts[keep], ev_px[keep], ev_vals[keep].astype(np.int64)
    uniq, key = np.unique(px, return_inverse=True)
    key = key.astype(np.int64)
    ts0 = int(ts.min())
    span = int(ts.max()) - ts0 + 2  # relative stamps of events are 1..span-1
    if len(uniq) * span >= _INT64_SAFE:  # pragma: no cover - absurd price/time spread
        for i in range(nq):
            m = (ts > q_t[i] - window_ns) & (ts <= q_t[i]) & (px >= q_lo[i]) & (px <= q_hi[i])
            out[i] = vals[m].sum(axis=0)
        return out
    order = np.argsort(key * span + (ts - ts0 + 1), kind="stable")
    comb = (key * span + (ts - ts0 + 1))[order]
    prefix = prefix_sum(vals[order])

    bad = np.isnan(q_lo) | np.isnan(q_hi)
    a = np.searchsorted(uniq, np.where(bad, np.inf, q_lo), side="left")
    b = np.searchsorted(uniq, np.where(bad, -np.inf, q_hi), side="right")
    counts = np.maximum(b - a, 0)
    total = int(counts.sum())
    if total == 0:
        return out
    rep = np.repeat(np.arange(nq), counts)
    starts = np.cumsum(counts) - counts
    kk = a[rep] + (np.arange(total) - starts[rep])
    rel_hi = np.clip(q_t[rep] - ts0 + 1, 0, span - 1)
    rel_lo = np.clip(q_t[rep] - int(window_ns) - ts0 + 1, 0, span - 1)
    hi = np.searchsorted(comb, kk * span + rel_hi, side="right")
    lo = np.searchsorted(comb, kk * span + rel_lo, side="right")
    part = prefix[hi] - prefix[lo]  # (total, k), exact integers
    csum = prefix_sum(part)
    ends = starts + counts
    out[:] = csum[ends] - csum[starts]
    return out


def seconds_name(window_s: float) -> str:
    """Column suffix for a window in seconds: 60 → '60s'."""
    return f"{_num(window_s)}s"


def minutes_name(window_s: float) -> str:
    """Column suffix for a window, in minutes when whole: 120 → '2min', 90 → '90s'."""
    if window_s % 60 == 0:
        return f"{_num(window_s / 60)}min"
    return seconds_name(window_s)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x).replace(".", "p")


def float_series(name: str, values: np.ndarray, valid: np.ndarray | None = None) -> pl.Series:
    """Float64 column where NaN (and rows with valid == False) become null."""
    values = np.asarray(values, dtype=np.float64).copy()
    if valid is not None:
        values[~np.asarray(valid, dtype=bool)] = np.nan
    return pl.Series(name, values, dtype=pl.Float64).fill_nan(None)


def int_series(name: str, values: np.ndarray, valid: np.ndarray | None = None) -> pl.Series:
    """Int64 column with nulls where valid == False."""
    s = pl.Series(name, np.asarray(values, dtype=np.int64), dtype=pl.Int64)
    if valid is not None:
        s = s.scatter(np.flatnonzero(~np.asarray(valid, dtype=bool)), None)
    return s


def bool_series(name: str, values: np.ndarray, valid: np.ndarray | None = None) -> pl.Series:
    s = pl.Series(name, np.asarray(values, dtype=bool), dtype=pl.Boolean)
    if valid is not None:
        s = s.scatter(np.flatnonzero(~np.asarray(valid, dtype=bool)), None)
    return s


QUERY_KEYS: tuple[str, ...] = ("t_ns", "level_kind", "level_price", "dir_sign")


def query_arrays(queries: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t_ns int64, level_price float64 with NaN for null, dir_sign int64) of a queries frame."""
    t = as_times(queries["t_ns"].cast(pl.Int64))
    level = queries["level_price"].cast(pl.Float64).fill_null(np.nan).to_numpy().astype(np.float64)
    sign = queries["dir_sign"].cast(pl.Int64).fill_null(0).to_numpy().astype(np.int64)
    return t, level, sign


def query_frame(queries: pl.DataFrame, columns: Sequence[pl.Series]) -> pl.DataFrame:
    """The query key columns followed by the feature columns, in query row order."""
    keys = [c for c in QUERY_KEYS if c in queries.columns]
    return queries.select(keys).with_columns(columns)
