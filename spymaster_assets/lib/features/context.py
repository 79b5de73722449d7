"""Context and physics features of a state row (SPEC §6): where price is, relative to what.

Context: time since the open and its bucket, spot, ATR, the signed distance to the level
(d = spot − level; d_atr = d / atr), which side price is on (dir_sign = +1 below the level,
i.e. an UP approach into resistance; −1 above), the touch history of the level counted
from past touches only, and whether the level is *in approach* (|d_atr| ≤ 2 with price
moving toward it).

Physics (T2): force = order flow pushing toward the level (toward-level OFI over 60 s),
mass = the resting size defending it, and their ratio — a flow-to-liquidity pressure that
the model can compare with the realized acceleration toward the level.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .registry import feature

NS_PER_S = 1_000_000_000
TIME_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("T0_15", 0, 15),
    ("T15_30", 15, 30),
    ("T30_60", 30, 60),
    ("T60_120", 60, 120),
    ("T120_180", 120, float("inf")),
)
APPROACH_D_ATR = 2.0

FEATURES = [
    feature("minutes_since_open", "context", "T0", "min", "-", "minutes since the 09:30 ET open"),
    feature("spot", "context", "T0", "pt", "-", "last traded price (last completed 1-min close at tier T0)"),
    feature("atr", "context", "T0", "pt", "14 x 1min", "average true range of the last 14 completed 1-min bars"),
    feature("d", "context", "T0", "pt", "-", "spot minus level (+ = price above the level)", True),
    feature("d_atr", "context", "T0", "ATR", "-", "spot minus level in ATRs", True),
    feature("abs_d_atr", "context", "T0", "ATR", "-", "how far price is from the level in ATRs", True),
    feature("attempt_index", "context", "T0", "count", "session", "which attempt at this level a touch now would be (1 = first)", True),
    feature("touches_today", "context", "T0", "count", "session", "touches of this level so far today", True),
    feature("time_since_last_touch_s", "context", "T0", "s", "session", "seconds since this level was last touched (null if never)", True),
    feature("physics_force", "physics", "T2", "contracts", "60s", "order flow pushing toward the level over the last minute", True),
    feature("physics_mass", "physics", "T2", "contracts", "-", "resting size defending the level (within 2 pt)", True),
    feature("physics_pressure", "physics", "T2", "ratio", "60s", "flow toward the level per contract defending it", True),
]


def grid_times(rth_open_ns: int, analysis_end_ns: int, step_s: int = 30) -> np.ndarray:
    """30-second grid [09:30, 12:30] ET inclusive (361 points)."""
    return np.arange(rth_open_ns, analysis_end_ns + 1, step_s * NS_PER_S, dtype=np.int64)


def time_bucket_expr(minutes: pl.Expr) -> pl.Expr:
    expr = pl.lit(None, dtype=pl.Utf8)
    for name, lo, hi in reversed(TIME_BUCKETS):
        expr = pl.when((minutes >= lo) & (minutes < hi)).then(pl.lit(name)).otherwise(expr)
    return expr


def side_of_level(spot: pl.Expr, level: pl.Expr) -> pl.Expr:
    """dir_sign: +1 when price is below the level (an approach would be UP), −1 above.

    Exactly at the level the approach is still UP: resistance tested from below is the
    convention for ties (any rule works if it is the same in batch and live)."""
    return pl.when(spot > level).then(pl.lit(-1)).otherwise(pl.lit(1)).cast(pl.Int8)


def touch_history(queries: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """touches_today, attempt_index, time_since_last_touch_s per (t, level) from anchors ≤ t."""
    if events.height == 0:
        return queries.with_columns(
            pl.lit(0, dtype=pl.Int32).alias("touches_today"),
            pl.lit(1, dtype=pl.Int32).alias("attempt_index"),
            pl.lit(None, dtype=pl.Float64).alias("time_since_last_touch_s"),
        )
    anchors = (
        events.select("level_kind", pl.col("ts_ns").alias("last_touch_ns"))
        .sort("last_touch_ns")
        .with_columns(pl.int_range(1, pl.len() + 1).over("level_kind").cast(pl.Int32).alias("touches_today"))
    )
    joined = queries.sort("t_ns").join_asof(
        anchors, left_on="t_ns", right_on="last_touch_ns", by="level_kind", strategy="backward", check_sortedness=False
    )
    return joined.with_columns(
        pl.col("touches_today").fill_null(0),
        (pl.col("touches_today").fill_null(0) + 1).cast(pl.Int32).alias("attempt_index"),
        ((pl.col("t_ns") - pl.col("last_touch_ns")) / NS_PER_S).alias("time_since_last_touch_s"),
    ).drop("last_touch_ns")
