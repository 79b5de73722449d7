"""Context and physics features of a state row (SPEC §6): where price is, relative to what.

Context: time since the open and its bucket, spot, ATR, the signed distance to the level
(d = spot − level; d_atr = d / atr), and whether the level is *in approach* (|d_atr| ≤ 2
with price moving toward it).

Direction. d_atr alone says where price is, not where it came from: a bar that touched
resistance from below and closed 0.3 ATR above it has d_atr = +0.3, like a bar that sits
0.3 ATR above support. The state's dir_sign (key column; as a vector dimension
approach_sign) is the direction an anchor at t would have (+1 UP = came from below, −1 DOWN)
by the anchors' own rule — the side of the last price outside the touch band
(`events.approach_sides`), or the side price is on before it has left the band — so at an
anchor's row it equals the anchor's direction and every toward-the-level feature (velocity,
tape, OFI, defending depth) is signed for that approach. d_atr_toward = d_atr · dir_sign is
the distance signed toward the level: < 0 = still short of it, > 0 = already through it.
bar_reach_toward_atr is how far the last completed 1-min bar reached toward (and past) the
level, in ATRs.

Touch history counts the level's anchors *strictly before* t: an anchor stamped at t (at T0
the touching bar's close, a grid time) is the touch a query at t is asking about, so it is
never its own history. attempt_index = touches_today + 1 is the number of a touch at t,
equal to the anchor's own attempt_index; time_since_last_touch_s is the time since the
previous touch, null (vector: 3 h, "as long ago as the window allows") when there is none.

Physics (T2): force = order flow pushing toward the level (toward-level OFI over 60 s),
mass = the resting size defending it, and their ratio — a flow-to-liquidity pressure that
the model can compare with the realized acceleration toward the level.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .registry import Missing, feature

NS_PER_S = 1_000_000_000
NEVER_TOUCHED_S = 3 * 3600.0  # no earlier touch: as long ago as the 3-hour analysis window allows
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
    feature("approach_sign", "context", "T0", "sign", "session",
            "side price approaches from (= dir_sign): +1 from below (testing resistance), −1 from above (testing support)",
            True),
    feature("d_atr_toward", "context", "T0", "ATR", "-",
            "distance in ATRs signed toward the level: < 0 short of it, > 0 already through it", True),
    feature("bar_reach_toward_atr", "context", "T0", "ATR", "1min",
            "how far the last completed 1-min bar reached toward the level, in ATRs (> 0 = traded through it)", True),
    feature("attempt_index", "context", "T0", "count", "session",
            "which attempt at this level a touch now is (1 = first; touches before now + 1)", True),
    feature("touches_today", "context", "T0", "count", "session", "touches of this level earlier today (before now)", True),
    feature("time_since_last_touch_s", "context", "T0", "s", "session", "seconds since this level was last touched",
            True, missing=Missing("the level has not been touched earlier today", NEVER_TOUCHED_S)),
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
    """The side price is on: +1 below the level (an approach would be UP), −1 above — dir_sign
    until price has been outside the touch band (then the band rule of `approach_sides` decides).

    Exactly at the level the approach is still UP: resistance tested from below is the
    convention for ties (any rule works if it is the same in batch and live)."""
    return pl.when(spot > level).then(pl.lit(-1)).otherwise(pl.lit(1)).cast(pl.Int8)


def toward_level(d_atr: pl.Expr, approach_sign: pl.Expr) -> pl.Expr:
    """d_atr signed toward the level: > 0 = price is already past the level it approached."""
    return d_atr * approach_sign


def bar_reach_toward_atr(high: pl.Expr, low: pl.Expr, level: pl.Expr, approach_sign: pl.Expr, atr: pl.Expr) -> pl.Expr:
    """How far a bar reached toward the level, in ATRs: (high − L)/atr for UP, (L − low)/atr for
    DOWN; > 0 = the bar traded through the level. Null without a positive ATR."""
    reach = pl.max_horizontal(approach_sign * (high - level), approach_sign * (low - level))
    return pl.when(atr > 0).then(reach / atr)


def touch_history(queries: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """touches_today, attempt_index, time_since_last_touch_s per (t, level) from anchors strictly before t."""
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
        anchors, left_on="t_ns", right_on="last_touch_ns", by="level_kind", strategy="backward",
        allow_exact_matches=False, check_sortedness=False,
    )
    # numpy divides exactly; polars multiplies by the reciprocal (30 s would read 30.000000000000004).
    elapsed_ns = (joined["t_ns"] - joined["last_touch_ns"]).cast(pl.Float64).to_numpy()
    return joined.with_columns(
        pl.col("touches_today").fill_null(0),
        (pl.col("touches_today").fill_null(0) + 1).cast(pl.Int32).alias("attempt_index"),
        pl.Series("time_since_last_touch_s", elapsed_ns / NS_PER_S).fill_nan(None),
    ).drop("last_touch_ns")
