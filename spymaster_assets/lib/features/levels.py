"""The session's price levels, each with the moment it becomes known (SPEC §6), and confluence.

Static levels (one row per session; absent — no row — when their window has no bars):
- PM_HIGH / PM_LOW: max high / min low of 1-min bars starting in [04:00, 09:30) ET, known at
  09:30 (the last premarket bar closes at 09:30).
- OR_HIGH / OR_LOW: the same over [09:30, 09:45) ET, known at 09:45.

Dynamic levels (one row per 2-min bar close, known at its bar_end_ns):
- SMA_90: simple mean of the last 90 2-min closes.
- EMA_20: α = 2/21, *seeded with the SMA of the first 20 closes* of the sequence, then
  e_i = α·c_i + (1 − α)·e_{i−1}. The sequence is the ordered 2-min closes from the warm-up
  start (gaps — halts, weekends, missing bars — are ignored: it is just the ordered closes).

Warm-up rule (so batch and a live engine agree bit for bit): the close sequence starts at
`warmup_start_ns`, by default the Globex open (18:00 ET) of the *previous* session; bars
before it are ignored even when supplied. A live engine must therefore buffer the 2-min bars
from that instant. With ≥ 465 2-min bars before each RTH open the EMA seed has long decayed
((19/21)^445 ≈ 1e-19) and SMA_90 is defined from the previous session on, when its data exist.
Only rows whose bar_end_ns lies in the session's kept window [Globex open, close] are
returned (the warm-up bars of the previous session only feed the recursion).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from ..calendar import SessionWindow, previous_session, session_window
from .bars import trailing_mean
from .registry import Missing, feature

LEVEL_SCHEMA: dict[str, pl.DataType] = {"level_kind": pl.Utf8, "price": pl.Float64, "known_at_ns": pl.Int64}
LEVELS_AT_SCHEMA: dict[str, pl.DataType] = {"t_ns": pl.Int64, "level_kind": pl.Utf8, "level_price": pl.Float64}
STATIC_KINDS = ("PM_HIGH", "PM_LOW", "OR_HIGH", "OR_LOW")
DYNAMIC_KINDS = ("SMA_90", "EMA_20")
STACKING_BANDS_PT = (2, 5, 10)
NO_OTHER_LEVEL_ATR = 10.0  # no other active level: farther than any confluence that matters

FEATURES = [
    *[
        feature(f"level_stacking_{b}pt", "context", "T0", "count", "-",
                f"how many other active levels sit within {b} points of this one (confluence)", True)
        for b in STACKING_BANDS_PT
    ],
    feature("dist_to_other_levels_atr", "context", "T0", "ATR", "-",
            "distance from this level to the nearest other active level, in ATRs", True,
            missing=Missing("no other level is active: far from any confluence", NO_OTHER_LEVEL_ATR)),
]


def _window(session: dt.date | SessionWindow) -> SessionWindow:
    return session if isinstance(session, SessionWindow) else session_window(session)


def _levels_frame(rows: list[tuple[str, float, int]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=LEVEL_SCHEMA, orient="row")


def static_levels(bars_1m: pl.DataFrame, session: dt.date | SessionWindow) -> pl.DataFrame:
    """PM_HIGH, PM_LOW (known at 09:30) and OR_HIGH, OR_LOW (known at 09:45) of the session.

    A level whose window holds no 1-min bar is absent (no row), e.g. no premarket data."""
    w = _window(session)
    rows: list[tuple[str, float, int]] = []
    for prefix, start, end in (("PM", w.premarket_start_ns, w.rth_open_ns), ("OR", w.rth_open_ns, w.opening_range_end_ns)):
        inside = bars_1m.filter((pl.col("bar_start_ns") >= start) & (pl.col("bar_start_ns") < end))
        if inside.height:
            rows.append((f"{prefix}_HIGH", float(inside["high"].max()), end))
            rows.append((f"{prefix}_LOW", float(inside["low"].min()), end))
    return _levels_frame(rows)


def default_warmup_start_ns(session: dt.date) -> int:
    """Globex open (18:00 ET) of the previous session: where the dynamic levels' closes start."""
    return session_window(previous_session(session)).globex_open_ns


def ema_seeded(closes: np.ndarray, period: int) -> np.ndarray:
    """EMA with α = 2/(period+1), seeded at index period−1 with the mean of the first `period`
    values (NaN before)."""
    closes = np.asarray(closes, dtype=np.float64)
    out = np.full(len(closes), np.nan)
    if len(closes) < period:
        return out
    alpha = 2.0 / (period + 1)
    value = trailing_mean(closes[:period], period)[-1]
    out[period - 1] = value
    for i in range(period, len(closes)):  # one step per 2-min bar (~1,200 per call)
        value = alpha * closes[i] + (1.0 - alpha) * value
        out[i] = value
    return out


def dynamic_levels(
    bars_2m: pl.DataFrame,
    session: dt.date | SessionWindow,
    *,
    sma_period: int = 90,
    ema_period: int = 20,
    warmup_start_ns: int | None = None,
) -> pl.DataFrame:
    """SMA_90 and EMA_20 of 2-min closes, one row per bar whose close lies in the session's
    kept window, known at bar_end_ns. Rows where a level is not yet defined are omitted.
    bars_2m may include earlier sessions' bars; the closes used start at `warmup_start_ns`
    (default: `default_warmup_start_ns(session)`, see the module docstring)."""
    w = _window(session)
    if warmup_start_ns is None:
        warmup_start_ns = default_warmup_start_ns(w.session)
    bars = bars_2m.filter(pl.col("bar_start_ns") >= warmup_start_ns).sort("bar_start_ns")
    closes = bars["close"].to_numpy().astype(np.float64)
    known = bars["bar_end_ns"].to_numpy()
    keep = (known >= w.globex_open_ns) & (known <= w.close_ns)
    frames = []
    for kind, values in ((f"SMA_{sma_period}", trailing_mean(closes, sma_period)), (f"EMA_{ema_period}", ema_seeded(closes, ema_period))):
        ok = keep & ~np.isnan(values)
        frames.append(pl.DataFrame({"level_kind": [kind] * int(ok.sum()), "price": values[ok], "known_at_ns": known[ok]}, schema=LEVEL_SCHEMA))
    return pl.concat(frames)


def levels_asof(levels: pl.DataFrame, times) -> pl.DataFrame:
    """Active levels at each time: per level_kind the latest row with known_at_ns ≤ t.

    A static level (one row) is active from its known_at_ns on; a dynamic one takes its latest
    value. Kinds not yet known at t have no row. Output sorted by t_ns, level_kind."""
    times = np.unique(np.asarray(times, dtype=np.int64))
    if levels.height == 0 or len(times) == 0:
        return pl.DataFrame(schema=LEVELS_AT_SCHEMA)
    kinds = pl.DataFrame({"level_kind": sorted(levels["level_kind"].unique().to_list())})
    grid = pl.DataFrame({"t_ns": times}).join(kinds, how="cross").sort("t_ns")
    right = levels.select("level_kind", pl.col("price").alias("level_price"), pl.col("known_at_ns").cast(pl.Int64)).sort("known_at_ns")
    out = grid.join_asof(right, left_on="t_ns", right_on="known_at_ns", by="level_kind", strategy="backward",
                         check_sortedness=False)
    return out.filter(pl.col("level_price").is_not_null()).select(list(LEVELS_AT_SCHEMA)).sort("t_ns", "level_kind")


def _pairs(levels_at_t: pl.DataFrame) -> pl.DataFrame:
    """Every (level, other level) pair active at the same t, with their absolute distance."""
    left = levels_at_t.select("t_ns", "level_kind", "level_price")
    other = left.rename({"level_kind": "_other_kind", "level_price": "_other_price"})
    return (
        left.join(other, on="t_ns", how="inner")
        .filter(pl.col("level_kind") != pl.col("_other_kind"))
        .with_columns((pl.col("level_price") - pl.col("_other_price")).abs().alias("_dist"))
    )


def level_stacking(levels_at_t: pl.DataFrame, bands=STACKING_BANDS_PT) -> pl.DataFrame:
    """levels_at_t plus level_stacking_{b}pt: the number of *other* levels active at the same t
    with |price difference| ≤ b points (inclusive)."""
    names = [f"level_stacking_{b}pt" for b in bands]
    counts = (
        _pairs(levels_at_t)
        .group_by("t_ns", "level_kind")
        .agg([(pl.col("_dist") <= b).sum().cast(pl.Int32).alias(n) for b, n in zip(bands, names)])
    )
    return levels_at_t.join(counts, on=["t_ns", "level_kind"], how="left", maintain_order="left").with_columns(
        [pl.col(n).fill_null(0) for n in names]
    )


def dist_to_other_levels_atr(levels_at_t: pl.DataFrame, atr_col: str = "atr") -> pl.DataFrame:
    """levels_at_t (with an `atr_col` column per row) plus dist_to_other_levels_atr = distance
    to the nearest other active level / atr; null when there is no other level or atr is
    null or ≤ 0."""
    nearest = _pairs(levels_at_t).group_by("t_ns", "level_kind").agg(pl.col("_dist").min().alias("_nearest"))
    return (
        levels_at_t.join(nearest, on=["t_ns", "level_kind"], how="left", maintain_order="left")
        .with_columns(
            pl.when(pl.col(atr_col) > 0).then(pl.col("_nearest") / pl.col(atr_col)).alias("dist_to_other_levels_atr")
        )
        .drop("_nearest")
    )
