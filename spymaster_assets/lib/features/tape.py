"""Tape (T1): aggressor flow, trade-price velocity and sweeps from the trades schema.

Aggressor (SPEC §2, pinned in bronze): +1 buyer-initiated (Databento side 'B'), −1
seller-initiated ('A'), 0 unknown ('N'). Unknown-aggressor prints count in neither buy nor
sell volume. Trades are ordered by ts_event (stable, so prints sharing a timestamp keep
their feed order) and a window at t is (t − w, t].

Definitions
- buy_vol_{w}s / sell_vol_{w}s: Σ size of buyer- / seller-initiated prints in the window
  (0 when there are none — a genuine zero).
- tape_imbalance_{w}s = (buy − sell) / (buy + sell); null when buy + sell = 0.
- trade_velocity_{w}s: ordinary least-squares slope of print price on print time (one
  point per print, unweighted), points per second; null with < 3 prints in the window or
  when all prints share one timestamp. trade_velocity_toward_{w}s = dir_sign · slope.
- Near level (band b, default 2 pt): only prints with L − b ≤ price ≤ L + b.
  tape_near_buy_vol / tape_near_sell_vol, and tape_near_imbalance_toward =
  dir_sign · (buy − sell)/(buy + sell) (null without near-level volume): + = aggression
  toward the level (buying into resistance for UP, selling into support for DOWN).
- tape_imbalance_toward_{w}s (w = 120): dir_sign · tape_imbalance_{w}s, every print of the
  contract (not only near the level): the approach's own aggression over its last two
  minutes, + = buyers lifting offers into an UP approach (sellers into a DOWN one).
- Sweeps (see `detect_sweeps`): sweep_count_{w}s counts sweeps whose *qualification time*
  lies in the window; sweep_buy/sell split by aggressor; sweep_toward_count = sweeps in the
  direction of the approach (buy sweeps for UP, sell sweeps for DOWN).

Every value at t reads only prints with ts_event ≤ t: sums are int64 prefix-sum
differences and the velocity fit uses exactly the prints in the window, so a trailing
buffer reproduces them bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from .asof import (
    NS_PER_S,
    as_times,
    banded_window_sums,
    float_series,
    int_series,
    prefix_sum,
    query_arrays,
    query_frame,
    seconds_name,
    window_count,
    window_sum,
)
from .registry import FeatureDef, Missing, feature

DEFAULT_WINDOWS_S: tuple[int, ...] = (30, 60, 120)
DEFAULT_VELOCITY_WINDOW_S = 60
DEFAULT_SWEEP_WINDOW_S = 60
DEFAULT_SWEEP_MIN_PRICES = 3
DEFAULT_SWEEP_MAX_MS = 100
DEFAULT_NEAR_BAND_PT = 2.0
DEFAULT_NEAR_WINDOW_S = 60
DEFAULT_TOWARD_IMBALANCE_WINDOW_S = 120
MIN_VELOCITY_TRADES = 3


def _sorted_trades(trades: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ts, price, size, aggressor) sorted by ts_event, ties in feed order."""
    ts = as_times(trades["ts_event"].cast(pl.Int64))
    order = np.argsort(ts, kind="stable")
    px = trades["price"].cast(pl.Float64).fill_null(np.nan).to_numpy()[order]
    size = trades["size"].cast(pl.Int64).fill_null(0).to_numpy()[order]
    agg = trades["aggressor"].cast(pl.Int64).fill_null(0).to_numpy()[order]
    return ts[order], px, size, agg


def detect_sweeps(
    trades: pl.DataFrame,
    min_prices: int = DEFAULT_SWEEP_MIN_PRICES,
    max_span_ms: float = DEFAULT_SWEEP_MAX_MS,
) -> pl.DataFrame:
    """Sweeps: bursts of same-aggressor prints over ≥ `min_prices` distinct prices in < `max_span_ms`.

    Precisely, with prints ordered by ts_event (ties in feed order):
    1. A *run* is a maximal sequence of consecutive prints with the same non-zero aggressor
       (any print of the other side or of unknown aggressor ends it).
    2. Each run is cut into *slices* by time since its first print: slice k holds the run's
       prints with ts − ts_first ∈ [k·T, (k+1)·T), T = max_span_ms. A slice therefore spans
       strictly less than T, and prints sharing one timestamp (one aggressive order filled
       at several levels) are always in the same slice.
    3. A slice is a *sweep* once it contains `min_prices` distinct prices. The sweep is
       stamped at its qualification print — the print that brings the slice's distinct
       price count to `min_prices` — so whether a sweep exists at t depends only on prints
       ≤ t (later prints of the slice never change it).

    Returns DataFrame[ts_event (qualification time), aggressor (+1/−1), start_ts (slice's
    first print), first_price, qualify_price], sorted by ts_event.
    """
    schema = {
        "ts_event": pl.Int64,
        "aggressor": pl.Int8,
        "start_ts": pl.Int64,
        "first_price": pl.Float64,
        "qualify_price": pl.Float64,
    }
    if trades.height == 0:
        return pl.DataFrame(schema=schema)
    ts, px, _, agg = _sorted_trades(trades)
    n = len(ts)
    idx = np.arange(n)
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (agg[1:] != agg[:-1]) | (agg[1:] == 0)
    run_start = np.maximum.accumulate(np.where(new_run, idx, 0))
    span_ns = int(round(max_span_ms * 1_000_000))
    slice_k = (ts - ts[run_start]) // span_ns
    new_slice = new_run.copy()
    new_slice[1:] |= slice_k[1:] != slice_k[:-1]
    slice_id = np.cumsum(new_slice) - 1
    slice_start = np.flatnonzero(new_slice)
    # first print of each (slice, price) pair, in print order
    order = np.lexsort((idx, px, slice_id))
    s_sorted, p_sorted = slice_id[order], px[order]
    first_of_pair = np.ones(n, dtype=bool)
    first_of_pair[1:] = (s_sorted[1:] != s_sorted[:-1]) | (p_sorted[1:] != p_sorted[:-1])
    is_new = np.zeros(n, dtype=bool)
    is_new[order[first_of_pair]] = True
    csum = np.cumsum(is_new)
    distinct_so_far = csum - (csum[slice_start] - is_new[slice_start])[slice_id]
    qualify = is_new & (distinct_so_far == int(min_prices)) & (agg != 0)
    q = np.flatnonzero(qualify)
    first = slice_start[slice_id[q]]
    return pl.DataFrame(
        {
            "ts_event": ts[q],
            "aggressor": agg[q].astype(np.int8),
            "start_ts": ts[first],
            "first_price": px[first],
            "qualify_price": px[q],
        },
        schema=schema,
    )


def _velocity(ts: np.ndarray, px: np.ndarray, times: np.ndarray, window_ns: int) -> np.ndarray:
    """OLS slope (points/s) of price on time over prints in (t − w, t]; NaN if < 3 prints."""
    hi = np.searchsorted(ts, times, side="right")
    lo = np.searchsorted(ts, times - window_ns, side="right")
    out = np.full(len(times), np.nan)
    for i in range(len(times)):  # one small fit per grid time (≈ 361 a day), not per print
        a, b = lo[i], hi[i]
        if b - a < MIN_VELOCITY_TRADES:
            continue
        # fresh arrays and numpy's own (pairwise) sums, no BLAS: the result depends only on
        # the prints in the window, never on their position in the buffer
        x = (ts[a:b] - times[i]).astype(np.float64) / NS_PER_S
        y = px[a:b].copy()
        xc = x - x.mean()
        sxx = float((xc * xc).sum())
        if sxx > 0.0:
            out[i] = float((xc * (y - y.mean())).sum()) / sxx
    return out


def tape_features(
    trades: pl.DataFrame,
    grid_times,
    windows_s: Sequence[float] = DEFAULT_WINDOWS_S,
    velocity_window_s: float = DEFAULT_VELOCITY_WINDOW_S,
    sweep_window_s: float = DEFAULT_SWEEP_WINDOW_S,
    sweep_min_prices: int = DEFAULT_SWEEP_MIN_PRICES,
    sweep_max_ms: float = DEFAULT_SWEEP_MAX_MS,
) -> pl.DataFrame:
    """Market-wide tape features at each grid time.

    Columns: t_ns; for each w: buy_vol_{w}s, sell_vol_{w}s (Int64), tape_imbalance_{w}s;
    trade_velocity_{v}s; sweep_count_{s}s, sweep_buy_count_{s}s, sweep_sell_count_{s}s.
    """
    t = as_times(grid_times)
    ts, px, size, agg = _sorted_trades(trades)
    flow = prefix_sum(np.stack([np.where(agg > 0, size, 0), np.where(agg < 0, size, 0)], axis=1))
    cols = [pl.Series("t_ns", t, dtype=pl.Int64)]
    for w in windows_s:
        name = seconds_name(w)
        bs = window_sum(ts, flow, t, int(round(w * NS_PER_S)))
        buy, sell = bs[:, 0], bs[:, 1]
        tot = buy + sell
        cols += [
            int_series(f"buy_vol_{name}", buy),
            int_series(f"sell_vol_{name}", sell),
            float_series(f"tape_imbalance_{name}", (buy - sell) / np.where(tot > 0, tot, 1), tot > 0),
        ]
    v_ns = int(round(velocity_window_s * NS_PER_S))
    cols.append(float_series(f"trade_velocity_{seconds_name(velocity_window_s)}", _velocity(ts, px, t, v_ns)))
    sweeps = detect_sweeps(trades, sweep_min_prices, sweep_max_ms)
    s_ts = as_times(sweeps["ts_event"])
    s_agg = sweeps["aggressor"].to_numpy()
    s_ns = int(round(sweep_window_s * NS_PER_S))
    name = seconds_name(sweep_window_s)
    cols += [
        int_series(f"sweep_count_{name}", window_count(s_ts, t, s_ns)),
        int_series(f"sweep_buy_count_{name}", window_count(s_ts[s_agg > 0], t, s_ns)),
        int_series(f"sweep_sell_count_{name}", window_count(s_ts[s_agg < 0], t, s_ns)),
    ]
    return pl.DataFrame(cols)


def tape_level_features(
    trades: pl.DataFrame,
    queries: pl.DataFrame,
    band_pt: float = DEFAULT_NEAR_BAND_PT,
    window_s: float = DEFAULT_NEAR_WINDOW_S,
    velocity_window_s: float = DEFAULT_VELOCITY_WINDOW_S,
    sweep_window_s: float = DEFAULT_SWEEP_WINDOW_S,
    sweep_min_prices: int = DEFAULT_SWEEP_MIN_PRICES,
    sweep_max_ms: float = DEFAULT_SWEEP_MAX_MS,
    toward_imbalance_window_s: float = DEFAULT_TOWARD_IMBALANCE_WINDOW_S,
) -> pl.DataFrame:
    """Level-relative tape features for each (t_ns, level, dir_sign) query.

    Columns (query keys first): tape_near_buy_vol_{w}s, tape_near_sell_vol_{w}s (Int64;
    null only for a null level), tape_near_imbalance_toward_{w}s, trade_velocity_toward_{v}s,
    sweep_toward_count_{s}s, tape_imbalance_toward_{u}s.
    """
    t, level, sign = query_arrays(queries)
    ok = ~np.isnan(level) & (sign != 0)
    ts, px, size, agg = _sorted_trades(trades)
    flow = np.stack([np.where(agg > 0, size, 0), np.where(agg < 0, size, 0)], axis=1)
    w_ns = int(round(window_s * NS_PER_S))
    bs = banded_window_sums(ts, px, flow, t, level - band_pt, level + band_pt, w_ns)
    buy, sell = bs[:, 0], bs[:, 1]
    tot = buy + sell
    imb = sign * (buy - sell) / np.where(tot > 0, tot, 1)

    uniq_t, inv = np.unique(t, return_inverse=True)
    vel = _velocity(ts, px, uniq_t, int(round(velocity_window_s * NS_PER_S)))[inv]
    sweeps = detect_sweeps(trades, sweep_min_prices, sweep_max_ms)
    s_ts = as_times(sweeps["ts_event"])
    s_agg = sweeps["aggressor"].to_numpy()
    s_ns = int(round(sweep_window_s * NS_PER_S))
    up = window_count(s_ts[s_agg > 0], t, s_ns)
    down = window_count(s_ts[s_agg < 0], t, s_ns)
    toward = np.where(sign > 0, up, down)
    all_prints = window_sum(ts, prefix_sum(flow), t, int(round(toward_imbalance_window_s * NS_PER_S)))
    all_total = all_prints[:, 0] + all_prints[:, 1]
    all_toward = sign * (all_prints[:, 0] - all_prints[:, 1]) / np.where(all_total > 0, all_total, 1)
    name = seconds_name(window_s)
    return query_frame(
        queries,
        [
            int_series(f"tape_near_buy_vol_{name}", buy, ok),
            int_series(f"tape_near_sell_vol_{name}", sell, ok),
            float_series(f"tape_near_imbalance_toward_{name}", imb, ok & (tot > 0)),
            float_series(f"trade_velocity_toward_{seconds_name(velocity_window_s)}", sign * vel, ok),
            int_series(f"sweep_toward_count_{seconds_name(sweep_window_s)}", toward, ok),
            float_series(f"tape_imbalance_toward_{seconds_name(toward_imbalance_window_s)}", all_toward, ok & (all_total > 0)),
        ],
    )


# Quiet tape is information: no aggressive volume → no imbalance; fewer than 3 prints (or all
# at one instant) → no measurable slope, and the step price did not move.
NO_AGGRESSION = Missing("no buyer- or seller-initiated volume in the window: no imbalance", 0.0)
TOO_FEW_PRINTS = Missing(f"fewer than {MIN_VELOCITY_TRADES} prints (or all at one instant) in the window: price flat", 0.0)


def _window_defs() -> list[FeatureDef]:
    defs = []
    for w in DEFAULT_WINDOWS_S:
        defs += [
            feature(f"buy_vol_{w}s", "tape", "T1", "contracts", f"{w}s", f"buyer-initiated volume over the last {w} s"),
            feature(f"sell_vol_{w}s", "tape", "T1", "contracts", f"{w}s", f"seller-initiated volume over the last {w} s"),
            feature(
                f"tape_imbalance_{w}s",
                "tape",
                "T1",
                "ratio [-1,1]",
                f"{w}s",
                f"(buy − sell)/(buy + sell) volume over the last {w} s (+ = buyers lifting offers)",
                missing=NO_AGGRESSION,
            ),
        ]
    return defs


FEATURES: list[FeatureDef] = [
    *_window_defs(),
    feature("trade_velocity_60s", "tape", "T1", "pt/s", "60s", "least-squares slope of trade prices over the last 60 s",
            missing=TOO_FEW_PRINTS),
    feature("sweep_count_60s", "tape", "T1", "count", "60s", "aggressive sweeps (≥3 prices in <100 ms) in the last 60 s"),
    feature("sweep_buy_count_60s", "tape", "T1", "count", "60s", "buy sweeps (lifting ≥3 offers in <100 ms) in the last 60 s"),
    feature("sweep_sell_count_60s", "tape", "T1", "count", "60s", "sell sweeps (hitting ≥3 bids in <100 ms) in the last 60 s"),
    feature(
        "tape_near_buy_vol_60s",
        "tape",
        "T1",
        "contracts",
        "60s",
        "buyer-initiated volume traded within 2 pt of the level in the last 60 s",
        level_relative=True,
    ),
    feature(
        "tape_near_sell_vol_60s",
        "tape",
        "T1",
        "contracts",
        "60s",
        "seller-initiated volume traded within 2 pt of the level in the last 60 s",
        level_relative=True,
    ),
    feature(
        "tape_near_imbalance_toward_60s",
        "tape",
        "T1",
        "ratio [-1,1]",
        "60s",
        "aggressor imbalance of trades within 2 pt of the level, + = pushing toward the level",
        level_relative=True,
        missing=Missing("no aggressive volume traded within 2 pt of the level in the window: no imbalance", 0.0),
    ),
    feature(
        "trade_velocity_toward_60s",
        "tape",
        "T1",
        "pt/s",
        "60s",
        "trade-price slope over the last 60 s, + = moving toward the level",
        level_relative=True,
        missing=TOO_FEW_PRINTS,
    ),
    feature(
        "sweep_toward_count_60s",
        "tape",
        "T1",
        "count",
        "60s",
        "sweeps in the last 60 s aggressing toward the level (buy sweeps for UP, sell for DOWN)",
        level_relative=True,
    ),
    feature(
        f"tape_imbalance_toward_{DEFAULT_TOWARD_IMBALANCE_WINDOW_S}s",
        "tape",
        "T1",
        "ratio [-1,1]",
        f"{DEFAULT_TOWARD_IMBALANCE_WINDOW_S}s",
        f"(buy − sell)/(buy + sell) volume of all prints over the last {DEFAULT_TOWARD_IMBALANCE_WINDOW_S} s, "
        "+ = aggression toward the level (buying into an UP approach, selling into a DOWN one)",
        level_relative=True,
        missing=NO_AGGRESSION,
    ),
]
