"""Liquidity (T2): the resting size defending a level, from the MBP-10 book.

Book state at time s = the last MBP-10 record whose effective stamp (running max of
ts_event, `asof.effective_ts`) is ≤ s; each record carries the full top-10 book after its
update. Unknown (before the buffer's first record) → null.

Definitions, for a query (t, level L, dir_sign), band b (default 2 pt):
- defending side = asks for UP (dir_sign = +1, resistance from below), bids for DOWN (−1).
- defending_depth(s) = Σ sizes of the defending side's top-10 levels with price in
  [L − b, L + b] in the book at s (0 when none of the visible levels is in the band).
  opposing_depth = the same on the other side. L is the level's value at t, also for the
  look-back samples (a dynamic level is evaluated at its current price).
- Causal sample grid: defending depth is sampled as-of the times t − j·Δ, Δ = 1 s
  (`sample_step_s`), j = 0, 1, …; every statistic below reads only these samples.
- defending_depth_chg_{k} = depth(t) − depth(t − k), k ∈ 1/2/3/5 min.
- replenish_ratio_2min = Σ positive 1-s increments / Σ |negative| 1-s increments of
  defending depth over (t − 2 min, t] (null when there was no decrease);
  replenish_share_2min = positive / (positive + |negative|) ∈ [0, 1] (null when flat).
- wall_ratio_30min = depth(t) / mean of depth sampled every 10 s at t, t − 10 s, …,
  t − 1790 s (the trailing 30 min; unknown samples skipped; null when the mean is 0).
- vacuum_duration_s: with threshold θ = vacuum_frac (0.25) × that trailing 30-min mean
  (as known at t, applied to the whole look-back), 0 if depth(t) ≥ θ; otherwise t − s₀
  where s₀ is the first 1-s sample of the current uninterrupted run of samples below θ
  (an unknown sample ends the run), capped at vacuum_max_s (1800 s). A vacuum that began
  within the last second therefore reads 0 (1-s resolution; depth/wall_ratio tell it
  apart from "no vacuum"). Null when the mean is null or 0.
- Depletion / replenishment latency on the 1-s samples: pre-drop level P(s) = max depth
  over the 10 samples s − 10 s … s − 1 s; sample s is *depleted* when P(s) > 0 and
  depth(s) ≤ (1 − depletion_frac) · P(s) (a ≥ 50 % drop within 10 s). A depletion event is
  the first sample of a run of depleted samples. For the most recent event s_d within the
  last latency_lookback_s (1800 s): recovery = first sample s_r in (s_d, t] with depth ≥
  recovery_frac (0.8) · P(s_d). replenish_latency_s = s_r − s_d if recovered, else
  t − s_d (time elapsed so far) with replenishing_now = True; depletion_age_s = t − s_d.
  No depletion in the look-back → latency and age null, replenishing_now False.

Causality: a row at t reads book records stamped ≤ t only, through as-of lookups at
sample times ≤ t, and the look-back is bounded by `max_lookback_s(...)` (default 1811 s).
Work is vectorized per distinct (level price, side, t mod Δ) group: the group's depth is
sampled once on its grid, then every row is a slice of that series (no loop over records).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
from numpy.lib.stride_tricks import sliding_window_view

from .asof import (
    NS_PER_S,
    asof_index,
    bool_series,
    effective_ts,
    float_series,
    minutes_name,
    query_arrays,
    query_frame,
)
from .registry import FeatureDef, Missing, feature

DEFAULT_BAND_PT = 2.0
DEFAULT_CHANGE_WINDOWS_S: tuple[int, ...] = (60, 120, 180, 300)
DEFAULT_REPLENISH_WINDOW_S = 120
DEFAULT_WALL_WINDOW_S = 1800
DEFAULT_WALL_STEP_S = 10
DEFAULT_VACUUM_FRAC = 0.25
DEFAULT_VACUUM_MAX_S = 1800
DEFAULT_DEPLETION_FRAC = 0.5
DEFAULT_DEPLETION_WINDOW_S = 10
DEFAULT_RECOVERY_FRAC = 0.8
DEFAULT_LATENCY_LOOKBACK_S = 1800
DEFAULT_SAMPLE_STEP_S = 1.0


class BookSides:
    """Zero-copy numpy views of an MBP-10 frame: effective stamps and per-level px/sz columns."""

    def __init__(self, book: pl.DataFrame):
        self.ts = effective_ts(book["ts_event"].cast(pl.Int64)) if book.height else np.zeros(0, np.int64)
        depth = 0
        while f"bid_px_{depth:02d}" in book.columns:
            depth += 1
        self.sides: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for side in ("bid", "ask"):
            self.sides[side] = [
                (
                    book[f"{side}_px_{k:02d}"].cast(pl.Float64).fill_null(np.nan).to_numpy(),
                    book[f"{side}_sz_{k:02d}"].fill_null(0).to_numpy(),
                )
                for k in range(depth)
            ]

    def depth(self, side: str, idx: np.ndarray, lo, hi) -> np.ndarray:
        """Σ size of `side` levels with lo ≤ px ≤ hi in records idx (NaN where idx < 0)."""
        ok = idx >= 0
        j = np.where(ok, idx, 0)
        out = np.zeros(len(idx), dtype=np.float64)
        if len(self.ts):
            for px, sz in self.sides[side]:
                p = px[j]
                out += np.where((p >= lo) & (p <= hi), sz[j], 0)
        out[~ok] = np.nan
        return out


def defending_depth_at(book: pl.DataFrame, times, level: float, dir_sign: int, band_pt: float = DEFAULT_BAND_PT):
    """(defending, opposing) depth arrays at `times` for one level (NaN where the book is unknown)."""
    sides = BookSides(book)
    idx = asof_index(sides.ts, times)
    defend, oppose = ("ask", "bid") if dir_sign > 0 else ("bid", "ask")
    return (
        sides.depth(defend, idx, level - band_pt, level + band_pt),
        sides.depth(oppose, idx, level - band_pt, level + band_pt),
    )


def _samples(window_s: float, step_s: float, what: str) -> int:
    n = int(round(window_s / step_s))
    if n < 1 or abs(n * step_s - window_s) > 1e-9:
        raise ValueError(f"{what} = {window_s} s is not a positive multiple of the sample step {step_s} s")
    return n


def max_lookback_s(
    change_windows_s: Sequence[float] = DEFAULT_CHANGE_WINDOWS_S,
    replenish_window_s: float = DEFAULT_REPLENISH_WINDOW_S,
    wall_window_s: float = DEFAULT_WALL_WINDOW_S,
    wall_step_s: float = DEFAULT_WALL_STEP_S,
    vacuum_max_s: float = DEFAULT_VACUUM_MAX_S,
    depletion_window_s: float = DEFAULT_DEPLETION_WINDOW_S,
    latency_lookback_s: float = DEFAULT_LATENCY_LOOKBACK_S,
    sample_step_s: float = DEFAULT_SAMPLE_STEP_S,
) -> float:
    """Oldest sample (seconds before t) any liquidity feature reads: a live buffer must cover it."""
    return max(
        max(change_windows_s),
        replenish_window_s,
        wall_window_s - wall_step_s,
        vacuum_max_s,
        latency_lookback_s + sample_step_s + depletion_window_s,
    )


def liquidity_features(
    book: pl.DataFrame,
    queries: pl.DataFrame,
    band_pt: float = DEFAULT_BAND_PT,
    change_windows_s: Sequence[float] = DEFAULT_CHANGE_WINDOWS_S,
    replenish_window_s: float = DEFAULT_REPLENISH_WINDOW_S,
    wall_window_s: float = DEFAULT_WALL_WINDOW_S,
    wall_step_s: float = DEFAULT_WALL_STEP_S,
    vacuum_frac: float = DEFAULT_VACUUM_FRAC,
    vacuum_max_s: float = DEFAULT_VACUUM_MAX_S,
    depletion_frac: float = DEFAULT_DEPLETION_FRAC,
    depletion_window_s: float = DEFAULT_DEPLETION_WINDOW_S,
    recovery_frac: float = DEFAULT_RECOVERY_FRAC,
    latency_lookback_s: float = DEFAULT_LATENCY_LOOKBACK_S,
    sample_step_s: float = DEFAULT_SAMPLE_STEP_S,
) -> pl.DataFrame:
    """Liquidity features per (t_ns, level, dir_sign) query (see the module docstring).

    Columns (after the query keys): defending_depth, opposing_depth,
    defending_depth_chg_{1,2,3,5}min, replenish_ratio_2min, replenish_share_2min,
    wall_ratio_30min, vacuum_duration_s, replenish_latency_s, depletion_age_s,
    replenishing_now. All null where the book is unknown at t or the level is null.
    """
    step = float(sample_step_s)
    step_ns = int(round(step * NS_PER_S))
    n_chg = [_samples(w, step, "change window") for w in change_windows_s]
    n_rep = _samples(replenish_window_s, step, "replenish window")
    stride = _samples(wall_step_s, step, "wall step")
    n_wall = _samples(wall_window_s, wall_step_s, "wall window")
    n_vac = _samples(vacuum_max_s, step, "vacuum max")
    n_dep = _samples(depletion_window_s, step, "depletion window")
    n_lat = _samples(latency_lookback_s, step, "latency look-back")
    K = max(max(n_chg), n_rep, (n_wall - 1) * stride, n_vac, n_lat + 1 + n_dep)

    t, level, sign = query_arrays(queries)
    nq = len(t)
    sides = BookSides(book)
    ok_q = ~np.isnan(level) & (sign != 0)

    d_now = np.full(nq, np.nan)
    chg = np.full((nq, len(n_chg)), np.nan)
    rep_ratio = np.full(nq, np.nan)
    rep_share = np.full(nq, np.nan)
    wall = np.full(nq, np.nan)
    vacuum = np.full(nq, np.nan)
    latency = np.full(nq, np.nan)
    age = np.full(nq, np.nan)
    replenishing = np.zeros(nq, dtype=bool)

    # opposing depth at t, all rows at once
    idx_t = asof_index(sides.ts, t)
    lo, hi = level - band_pt, level + band_pt
    opp = np.where(
        sign > 0, sides.depth("bid", idx_t, lo, hi), sides.depth("ask", idx_t, lo, hi)
    )

    rows_ok = np.flatnonzero(ok_q)
    if len(rows_ok) and len(sides.ts):
        groups = (
            pl.DataFrame(
                {
                    "level": level[rows_ok],
                    "sign": sign[rows_ok],
                    "phase": t[rows_ok] % step_ns,
                    "row": rows_ok,
                }
            )
            .group_by(["level", "sign", "phase"], maintain_order=True)
            .agg(pl.col("row"))
        )
        for L, s, _, rows in groups.iter_rows():  # distinct (level price, side): a few hundred a day
            rows = np.asarray(rows, dtype=np.int64)
            side = "ask" if s > 0 else "bid"
            tg = t[rows]
            t_max, t_min = int(tg.max()), int(tg.min())
            M = (t_max - t_min) // step_ns + K + 1
            grid = t_max - (M - 1 - np.arange(M, dtype=np.int64)) * step_ns
            D = sides.depth(side, asof_index(sides.ts, grid), L - band_pt, L + band_pt)
            pos = M - 1 - (t_max - tg) // step_ns
            W = sliding_window_view(D, K + 1)[pos - K]  # rows: samples t − K·Δ … t
            _fill_group(
                rows, W, K, n_chg, n_rep, stride, n_wall, n_vac, n_dep, n_lat, step,
                vacuum_frac, depletion_frac, recovery_frac,
                d_now, chg, rep_ratio, rep_share, wall, vacuum, latency, age, replenishing,
            )

    known = ok_q & ~np.isnan(d_now)
    cols = [
        float_series("defending_depth", d_now, known),
        float_series("opposing_depth", opp, known),
    ]
    cols += [float_series(f"defending_depth_chg_{minutes_name(w)}", chg[:, i], known) for i, w in enumerate(change_windows_s)]
    rep_name = minutes_name(replenish_window_s)
    cols += [
        float_series(f"replenish_ratio_{rep_name}", rep_ratio, known),
        float_series(f"replenish_share_{rep_name}", rep_share, known),
        float_series(f"wall_ratio_{minutes_name(wall_window_s)}", wall, known),
        float_series("vacuum_duration_s", vacuum, known),
        float_series("replenish_latency_s", latency, known),
        float_series("depletion_age_s", age, known),
        bool_series("replenishing_now", replenishing, known),
    ]
    return query_frame(queries, cols)


def _fill_group(
    rows, W, K, n_chg, n_rep, stride, n_wall, n_vac, n_dep, n_lat, step,
    vacuum_frac, depletion_frac, recovery_frac,
    d_now, chg, rep_ratio, rep_share, wall, vacuum, latency, age, replenishing,
) -> None:
    """All features of one group's rows from W (rows × K+1 depth samples, last column = t)."""
    now = W[:, K]
    d_now[rows] = now
    for i, n in enumerate(n_chg):
        chg[rows, i] = now - W[:, K - n]

    inc = np.diff(W[:, K - n_rep :], axis=1)
    has_inc = (~np.isnan(inc)).any(axis=1)
    pos = np.nansum(np.maximum(inc, 0.0), axis=1)
    neg = np.nansum(np.maximum(-inc, 0.0), axis=1)
    rep_ratio[rows] = np.where(has_inc & (neg > 0), pos / np.where(neg > 0, neg, 1.0), np.nan)
    tot = pos + neg
    rep_share[rows] = np.where(has_inc & (tot > 0), pos / np.where(tot > 0, tot, 1.0), np.nan)

    wall_samples = W[:, K - stride * np.arange(n_wall)]
    n_known = (~np.isnan(wall_samples)).sum(axis=1)
    total = np.nansum(wall_samples, axis=1)
    mean = np.where(n_known > 0, total / np.maximum(n_known, 1), np.nan)
    good_mean = n_known > 0
    good_mean[good_mean] = mean[good_mean] > 0
    wall[rows] = np.where(good_mean, now / np.where(good_mean, mean, 1.0), np.nan)

    thr = vacuum_frac * mean
    back = W[:, K - np.arange(n_vac + 1)]  # column j = sample t − j·Δ
    with np.errstate(invalid="ignore"):
        below = back < thr[:, None]  # unknown samples (NaN) are never "below"
    # j* = lag of the latest sample not below θ; the vacuum run started at lag j* − 1
    run = np.where(below.all(axis=1), n_vac, np.maximum(np.argmin(below, axis=1) - 1, 0))
    vacuum[rows] = np.where(good_mean, run * step, np.nan)

    # depletion / recovery over columns C0 … K (C0 = K − n_lat − 1: one extra for onsets)
    C0 = K - n_lat - 1
    cur = W[:, C0 : K + 1]
    pre = W[:, C0 - 1 : K].copy()
    for m in range(2, n_dep + 1):
        pre = np.fmax(pre, W[:, C0 - m : K + 1 - m])
    with np.errstate(invalid="ignore"):
        depleted = (pre > 0) & (cur <= (1.0 - depletion_frac) * pre)
    onset = depleted[:, 1:] & ~depleted[:, :-1]  # columns C0+1 … K
    has = onset.any(axis=1)
    last = onset.shape[1] - 1 - np.argmax(onset[:, ::-1], axis=1)  # most recent onset
    col_d = last + 1  # index into cur / pre
    r = np.arange(len(rows))
    target = recovery_frac * pre[r, col_d]
    cols = np.arange(cur.shape[1])
    with np.errstate(invalid="ignore"):
        recovered = (cols[None, :] > col_d[:, None]) & (cur >= target[:, None])
    has_rec = recovered.any(axis=1)
    first_rec = np.argmax(recovered, axis=1)
    end = cur.shape[1] - 1
    latency[rows] = np.where(has, np.where(has_rec, first_rec - col_d, end - col_d) * step, np.nan)
    age[rows] = np.where(has, (end - col_d) * step, np.nan)
    replenishing[rows] = has & ~has_rec


FEATURES: list[FeatureDef] = [
    feature(
        "defending_depth",
        "liquidity",
        "T2",
        "contracts",
        "-",
        "resting size within 2 pt of the level on the side that must be eaten (asks for UP, bids for DOWN)",
        level_relative=True,
    ),
    feature(
        "opposing_depth",
        "liquidity",
        "T2",
        "contracts",
        "-",
        "resting size within 2 pt of the level on the other side (bids for UP, asks for DOWN)",
        level_relative=True,
    ),
    *[
        feature(
            f"defending_depth_chg_{minutes_name(w)}",
            "liquidity",
            "T2",
            "contracts",
            minutes_name(w),
            f"change of the defending depth over the last {minutes_name(w)} (− = wall thinning)",
            level_relative=True,
        )
        for w in DEFAULT_CHANGE_WINDOWS_S
    ],
    feature(
        "replenish_ratio_2min",
        "liquidity",
        "T2",
        "ratio",
        "2min",
        "size added / size removed on the defending side over the last 2 min (1-s samples)",
        level_relative=True,
        # Unbounded with nothing removed; the vector uses its bounded twin replenish_share_2min.
        missing=Missing("no defending size was removed in the last 2 min", None),
    ),
    feature(
        "replenish_share_2min",
        "liquidity",
        "T2",
        "ratio [0,1]",
        "2min",
        "share of defending-depth changes that were additions over the last 2 min",
        level_relative=True,
        missing=Missing("the defending depth did not change in the last 2 min: neither adding nor pulling", 0.5),
    ),
    feature(
        "wall_ratio_30min",
        "liquidity",
        "T2",
        "ratio",
        "30min",
        "defending depth now vs its average over the last 30 min (>1 = a wall, <1 = thin)",
        level_relative=True,
        missing=Missing("no defending depth in the last 30 min to compare with: depth equals its own average", 1.0),
    ),
    feature(
        "vacuum_duration_s",
        "liquidity",
        "T2",
        "s",
        "30min",
        "how long the defending depth has stayed below a quarter of its 30-min average (0 = no vacuum)",
        level_relative=True,
        missing=Missing("no 30-min average depth to fall below: no vacuum", 0.0),
    ),
    feature(
        "replenish_latency_s",
        "liquidity",
        "T2",
        "s",
        "30min",
        "time the defending side took (or has taken so far) to refill to 80 % after its last ≥50 % drop",
        level_relative=True,
        missing=Missing("nothing was knocked down in the last 30 min: nothing to refill", 0.0),
    ),
    feature(
        "depletion_age_s",
        "liquidity",
        "T2",
        "s",
        "30min",
        "seconds since the defending side last lost ≥50 % of its size within 10 s",
        level_relative=True,
        missing=Missing("no depletion within the 30-min look-back: at least that long ago", 1800.0),
    ),
    feature(
        "replenishing_now",
        "liquidity",
        "T2",
        "bool",
        "30min",
        "the defending side was knocked down and has not yet refilled to 80 %",
        level_relative=True,
    ),
]
