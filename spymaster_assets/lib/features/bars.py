"""OHLCV bars of the front month and the 1-min ATR (SPEC §6), all causal.

Conventions
- A bar covers the half-open interval [bar_start_ns, bar_end_ns) and is stamped by its start.
  It becomes *usable* at bar_end_ns: every trade in it has ts_event < bar_end_ns, so at any
  t ≥ bar_end_ns it is built from data ≤ t. A bar that has not closed by t influences
  nothing at t (`value_asof` only reads bars with bar_end_ns ≤ t).
- Boundaries sit on the UTC epoch grid (start = ts − ts mod interval). ET offsets are whole
  hours, so 1-min and 2-min bars also start on ET minute boundaries (09:30 ET is an even
  minute in both EST and EDT).
- An interval without trades produces no row (no synthetic flat bar). Databento's ohlcv-1m
  follows the same rule, so bars from trades and bars from ohlcv-1m agree.
- Trades with the same ts_event keep their input (file) order: open/close are the first/last
  of them in that order.

Schema (BAR_SCHEMA): bar_start_ns, bar_end_ns, open, high, low, close, volume,
buy_volume / sell_volume (aggressor +1 / −1 volume; null at tier T0), trade_count (null at
T0), vwap (null at T0 or when volume is 0).
"""

from __future__ import annotations

import numpy as np
import polars as pl

NS_PER_S = 1_000_000_000
ATR_PERIOD = 14

BAR_SCHEMA: dict[str, pl.DataType] = {
    "bar_start_ns": pl.Int64,
    "bar_end_ns": pl.Int64,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.UInt64,
    "buy_volume": pl.UInt64,
    "sell_volume": pl.UInt64,
    "trade_count": pl.UInt32,
    "vwap": pl.Float64,
}


def _interval_ns(interval_s: int) -> int:
    if interval_s <= 0 or 86_400 % interval_s:
        raise ValueError(f"bar interval must divide a day, got {interval_s} s")
    return int(interval_s) * NS_PER_S


def empty_bars() -> pl.DataFrame:
    return pl.DataFrame(schema=BAR_SCHEMA)


def bars_from_trades(trades: pl.DataFrame, interval_s: int) -> pl.DataFrame:
    """Bars of `interval_s` seconds (10, 60, 120, ...) from one contract's trades.

    trades: ts_event (Int64 ns), price (Float64), size, aggressor (+1 buyer-initiated,
    −1 seller-initiated, 0 unknown). Trades with a null/NaN price are ignored. Empty intervals
    have no row. Sorted by bar_start_ns.
    """
    step = _interval_ns(interval_s)
    if trades.height == 0:
        return empty_bars()
    size = pl.col("size").cast(pl.UInt64)
    bars = (
        trades.select("ts_event", "price", "size", "aggressor")
        .filter(pl.col("price").is_not_null() & pl.col("price").is_not_nan())
        .sort("ts_event", maintain_order=True)
        .with_columns((pl.col("ts_event") - pl.col("ts_event").mod(step)).alias("bar_start_ns"))
        .group_by("bar_start_ns", maintain_order=True)
        .agg(
            pl.col("price").first().alias("open"),
            pl.col("price").max().alias("high"),
            pl.col("price").min().alias("low"),
            pl.col("price").last().alias("close"),
            size.sum().alias("volume"),
            size.filter(pl.col("aggressor") == 1).sum().alias("buy_volume"),
            size.filter(pl.col("aggressor") == -1).sum().alias("sell_volume"),
            pl.len().cast(pl.UInt32).alias("trade_count"),
            (pl.col("price") * size.cast(pl.Float64)).sum().alias("_pv"),
        )
        .with_columns(
            (pl.col("bar_start_ns") + step).alias("bar_end_ns"),
            pl.when(pl.col("volume") > 0).then(pl.col("_pv") / pl.col("volume").cast(pl.Float64)).alias("vwap"),
        )
    )
    return bars.select([pl.col(c).cast(t) for c, t in BAR_SCHEMA.items()]).sort("bar_start_ns")


def bars_from_ohlcv_1m(ohlcv: pl.DataFrame) -> pl.DataFrame:
    """Databento ohlcv-1m records (ts_event = bar start) of ONE contract → the bar schema.

    buy/sell volume, trade count and vwap are unknown at T0 and null. Raises if the frame
    holds several instrument_ids (filter to the front month first) or unaligned starts;
    duplicate records of the same minute are collapsed to the first.
    """
    if ohlcv.height == 0:
        return empty_bars()
    if "instrument_id" in ohlcv.columns and ohlcv["instrument_id"].n_unique() > 1:
        raise ValueError("ohlcv-1m frame holds several instruments; filter to one contract first")
    step = _interval_ns(60)
    if (ohlcv["ts_event"] % step != 0).any():
        raise ValueError("ohlcv-1m ts_event not aligned to whole minutes")
    return (
        ohlcv.sort("ts_event", maintain_order=True)
        .unique("ts_event", keep="first", maintain_order=True)
        .select(
            pl.col("ts_event").alias("bar_start_ns"),
            (pl.col("ts_event") + step).alias("bar_end_ns"),
            "open",
            "high",
            "low",
            "close",
            pl.col("volume").cast(pl.UInt64),
            pl.lit(None, pl.UInt64).alias("buy_volume"),
            pl.lit(None, pl.UInt64).alias("sell_volume"),
            pl.lit(None, pl.UInt32).alias("trade_count"),
            pl.lit(None, pl.Float64).alias("vwap"),
        )
        .select([pl.col(c).cast(t) for c, t in BAR_SCHEMA.items()])
    )


def _sum_or_null(column: str, dtype: pl.DataType) -> pl.Expr:
    """Sum of a column over the group, null if any member is null (unknown stays unknown)."""
    return pl.when(pl.col(column).null_count() == 0).then(pl.col(column).sum()).cast(dtype).alias(column)


def resample_bars(bars: pl.DataFrame, interval_s: int) -> pl.DataFrame:
    """Coarser bars from finer bars of the bar schema (e.g. 10 s → 1 min, 1 min → 2 min).

    A coarse bar aggregates the fine bars whose start falls in it. A missing fine bar is an
    interval without trades (neither our trade bars nor Databento's ohlcv emit empty bars),
    so it is simply absent from the aggregate: the coarse bar equals the bar built directly
    from the trades. The coarse bar is still usable only at its own end (start + interval),
    even when its last fine bar is missing — before then nobody can know no trade will come.
    """
    step = _interval_ns(interval_s)
    if bars.height == 0:
        return empty_bars()
    return (
        bars.sort("bar_start_ns", maintain_order=True)
        .with_columns((pl.col("bar_start_ns") - pl.col("bar_start_ns").mod(step)).alias("_start"))
        .group_by("_start", maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum().cast(pl.UInt64),
            _sum_or_null("buy_volume", pl.UInt64),
            _sum_or_null("sell_volume", pl.UInt64),
            _sum_or_null("trade_count", pl.UInt32),
            pl.when(pl.col("vwap").null_count() == 0)
            .then((pl.col("vwap") * pl.col("volume").cast(pl.Float64)).sum())
            .alias("_pv"),
        )
        .with_columns(
            pl.col("_start").alias("bar_start_ns"),
            (pl.col("_start") + step).alias("bar_end_ns"),
            pl.when(pl.col("volume") > 0).then(pl.col("_pv") / pl.col("volume").cast(pl.Float64)).alias("vwap"),
        )
        .select([pl.col(c).cast(t) for c, t in BAR_SCHEMA.items()])
        .sort("bar_start_ns")
    )


def bars_2m_from_1m(bars_1m: pl.DataFrame) -> pl.DataFrame:
    """2-min bars from 1-min bars (tier T0). Rule for a missing minute: see `resample_bars` —
    the 2-min bar aggregates the minute that exists (a missing minute had no trades) and is
    usable at start + 120 s; a 2-min interval with neither minute has no row."""
    return resample_bars(bars_1m, 120)


def trailing_mean(values: np.ndarray, period: int) -> np.ndarray:
    """Simple mean of the last `period` values at each index (NaN until `period` exist).

    Each window is summed on its own, oldest to newest, so a value depends only on the values
    in its window — bit for bit (a running add/subtract sum would carry rounding from older
    data, and a live engine with a trailing buffer would disagree in the last bits).
    """
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    out = np.full(n, np.nan)
    if n < period:
        return out
    total = values[0 : n - period + 1].copy()
    for k in range(1, period):
        total = total + values[k : n - period + 1 + k]
    out[period - 1 :] = total / period
    return out


def true_range(bars_1m: pl.DataFrame) -> np.ndarray:
    """TR = max(H − L, |H − C_prev|, |L − C_prev|); the first bar of the sequence has H − L.
    C_prev is the previous bar in the sequence (a minute without trades has no bar). Rows must
    be sorted by bar_start_ns (the output is aligned with them)."""
    if not bars_1m["bar_start_ns"].is_sorted():
        raise ValueError("bars must be sorted by bar_start_ns")
    high, low, close = (bars_1m[c].to_numpy().astype(np.float64) for c in ("high", "low", "close"))
    tr = high - low
    if len(tr) > 1:
        prev = close[:-1]
        tr[1:] = np.maximum(tr[1:], np.maximum(np.abs(high[1:] - prev), np.abs(low[1:] - prev)))
    return tr


def atr(bars_1m: pl.DataFrame, period: int = ATR_PERIOD) -> pl.Series:
    """ATR-`period` per 1-min bar (rows in bar_start_ns order): the simple mean of the last
    `period` true ranges, null until `period` bars exist. Stamped by the bar; usable at its
    bar_end_ns (read it with `value_asof`). Premarket/overnight bars count like any other.

    Trailing-buffer rule: the value at bar i depends on bars i − period … i (period + 1 bars,
    the oldest only through its close)."""
    values = trailing_mean(true_range(bars_1m), period)
    return pl.Series("atr", values, dtype=pl.Float64).fill_nan(None)


def value_asof(bars: pl.DataFrame, column: str, times) -> pl.Series:
    """For each t: `column` of the last bar with bar_end_ns ≤ t (null before the first)."""
    bars = bars.sort("bar_end_ns")
    times = np.asarray(times, dtype=np.int64)
    ends = bars["bar_end_ns"].to_numpy()
    idx = np.searchsorted(ends, times, side="right") - 1
    values = bars[column]
    if bars.height == 0:
        return pl.Series(column, [None] * len(times), dtype=values.dtype)
    picked = values.gather(np.maximum(idx, 0)).alias(column)
    missing = np.flatnonzero(idx < 0)
    return picked.scatter(missing, None) if len(missing) else picked
