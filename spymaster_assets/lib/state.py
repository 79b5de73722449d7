"""The silver session build: bars → ATR → levels → anchors → the 30-second state table.

Pure functions over one session's bronze frames (plus the previous session's 2-min bars for
the dynamic levels' warm-up). Every state value at grid time t is computed from events with
ts ≤ t by the family functions in `lib/features/`; this module only wires them together,
so a live engine that calls `build_state` on a trailing buffer ending at t gets the same row.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from .calendar import session_window
from .events import EVENT_SCHEMA, TouchConfig, approach_sides, find_anchors
from .features import registry
from .features.bars import atr as atr_of, bars_from_ohlcv_1m, bars_from_trades, resample_bars, value_asof
from .features.context import (
    APPROACH_D_ATR,
    bar_reach_toward_atr,
    grid_times,
    side_of_level,
    time_bucket_expr,
    touch_history,
    toward_level,
)
from .features.dealer import dealer_features
from .features.kinematics import (
    SERIES_SCHEMA,
    approach_features,
    displacement_toward_atr,
    kinematics,
    kinematics_toward_level,
    price_series_from_bars,
)
from .features.levels import dist_to_other_levels_atr, dynamic_levels, level_stacking, levels_asof, static_levels
from .features.liquidity import liquidity_features
from .features.order_flow import near_level_ofi, ofi_features, ofi_per_update
from .features.tape import tape_features, tape_level_features
from .tiers import tier_rank

NS_PER_S = 1_000_000_000
STATE_SCHEMA_VERSION = "4"  # 2: touch history strictly before t; dir_sign = approach side; approach_sign, d_atr_toward, bar_reach_toward_atr
# 3: flow_gex_band_2, tape_imbalance_toward_120s; anchor rows (state at each anchor's own time)
# 4: displacement_5min_toward_atr
KEY_COLUMNS = ("session", "t_ns", "level_kind", "level_price", "dir_sign", "time_bucket", "tier", "in_approach")


@dataclass
class OptionsInputs:
    definitions: pl.DataFrame
    trades: pl.DataFrame
    mbp1: pl.DataFrame
    open_interest: pl.DataFrame


@dataclass
class SessionInputs:
    """One session's front-month bronze frames; absent tiers are None."""

    session: dt.date
    tier: str
    ohlcv_1m: pl.DataFrame | None = None
    trades: pl.DataFrame | None = None
    book: pl.DataFrame | None = None
    options: OptionsInputs | None = None
    warmup_bars_2m: pl.DataFrame | None = None  # earlier sessions' 2-min bars

    def has(self, tier: str) -> bool:
        return tier_rank(self.tier) >= tier_rank(tier)


@dataclass
class SessionBars:
    bars_10s: pl.DataFrame | None
    bars_1m: pl.DataFrame  # with `atr` (known at bar_end_ns)
    bars_2m: pl.DataFrame


@dataclass(frozen=True)
class StateConfig:
    grid_step_s: int = 30
    approach_d_atr: float = APPROACH_D_ATR
    touch: TouchConfig = field(default_factory=TouchConfig)

    def __post_init__(self) -> None:
        # An episode reads the last grid row at or before its anchor and ages the row's
        # time-since-last-touch by the gap; that is exact only if no other touch of the level
        # can fall inside one grid step, which the per-level debounce guarantees.
        if self.touch.debounce_s < self.grid_step_s:
            raise ValueError(f"touch debounce {self.touch.debounce_s} s is shorter than the grid step {self.grid_step_s} s")


def build_bars(inputs: SessionInputs) -> SessionBars:
    """10 s / 1 min / 2 min bars from trades (T1+), or from bronze 1-min bars at T0."""
    if inputs.has("T1") and inputs.trades is not None and inputs.trades.height:
        bars_10s = bars_from_trades(inputs.trades, 10)
        bars_1m = resample_bars(bars_10s, 60)
    else:
        bars_10s = None
        bars_1m = bars_from_ohlcv_1m(inputs.ohlcv_1m)
    bars_1m = bars_1m.with_columns(atr_of(bars_1m).alias("atr"))
    return SessionBars(bars_10s=bars_10s, bars_1m=bars_1m, bars_2m=resample_bars(bars_1m.drop("atr"), 120))


def build_levels(inputs: SessionInputs, bars: SessionBars) -> pl.DataFrame:
    """Static PM/OR levels and dynamic SMA_90/EMA_20 rows, each with the time it becomes known."""
    history = bars.bars_2m if inputs.warmup_bars_2m is None else pl.concat([inputs.warmup_bars_2m, bars.bars_2m])
    history = history.unique("bar_start_ns", keep="last").sort("bar_start_ns")
    return pl.concat([static_levels(bars.bars_1m, inputs.session), dynamic_levels(history, inputs.session)])


@dataclass(frozen=True)
class SpotPath:
    """The finest causal price path: trade prints (T1+) or 1-min bars stamped at their close (T0)."""

    ts: np.ndarray
    price: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None


def spot_path(inputs: SessionInputs, bars: SessionBars) -> SpotPath:
    if bars.bars_10s is not None:
        trades = inputs.trades.sort("ts_event", maintain_order=True)
        return SpotPath(trades["ts_event"].to_numpy(), trades["price"].to_numpy())
    b = bars.bars_1m
    return SpotPath(b["bar_end_ns"].to_numpy(), b["close"].to_numpy(), b["low"].to_numpy(), b["high"].to_numpy())


def find_session_anchors(inputs: SessionInputs, bars: SessionBars, levels: pl.DataFrame, config: StateConfig) -> pl.DataFrame:
    window = session_window(inputs.session)
    path = spot_path(inputs, bars)
    atr_known = bars.bars_1m.filter(pl.col("atr").is_not_null())
    return find_anchors(
        inputs.session,
        path.ts,
        path.price,
        levels,
        atr_known["bar_end_ns"].to_numpy(),
        atr_known["atr"].to_numpy(),
        (window.rth_open_ns, window.analysis_end_ns),
        config.touch,
        spot_low=path.low,
        spot_high=path.high,
    )


def _asof(ts: np.ndarray, values: np.ndarray, times: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(ts, times, side="right") - 1
    out = np.full(len(times), np.nan)
    out[idx >= 0] = values[idx[idx >= 0]]
    return out


def build_state(
    inputs: SessionInputs,
    bars: SessionBars,
    levels: pl.DataFrame,
    events: pl.DataFrame,
    config: StateConfig = StateConfig(),
    times: np.ndarray | None = None,
) -> pl.DataFrame:
    """One row per (30 s grid time, active level) with every feature family the tier supplies.

    `times` (default: the whole session grid) asks for other instants: every value at t still reads
    data ≤ t only, so the live engine asks for the newest grid time on its buffered inputs and gets
    the row the batch table holds for it, and `anchor_state` asks for each anchor's own time."""
    window = session_window(inputs.session)
    if times is None:
        times = grid_times(window.rth_open_ns, window.analysis_end_ns, config.grid_step_s)
    times = np.unique(np.asarray(times, dtype=np.int64))
    path = spot_path(inputs, bars)
    atr_known = bars.bars_1m.filter(pl.col("atr").is_not_null())
    market = pl.DataFrame(
        {
            "t_ns": times,
            "spot": _asof(path.ts, path.price, times),
            "atr": _asof(atr_known["bar_end_ns"].to_numpy(), atr_known["atr"].to_numpy(), times),
        }
    ).with_columns(pl.col("spot").fill_nan(None), pl.col("atr").fill_nan(None))

    active = levels_asof(levels, times)
    sides = approach_sides(
        path.ts, path.price, levels, atr_known["bar_end_ns"].to_numpy(), atr_known["atr"].to_numpy(),
        (window.rth_open_ns, window.analysis_end_ns), times, config.touch, spot_low=path.low, spot_high=path.high,
    )
    # dir_sign is the direction a touch at t would have, by the anchors' own rule (the side of the
    # last price outside the touch band), so every toward-the-level feature of an anchor's row
    # reads the anchor's direction — also on a T0 touching bar that closed through the level.
    # Before price has been outside the band, a touch would come from the side it is on.
    queries = (
        active.join(market, on="t_ns", how="left")
        .filter(pl.col("spot").is_not_null())
        .join(sides, on=["t_ns", "level_kind"], how="left")
        .with_columns(
            pl.when(pl.col("approach_sign").fill_null(0) != 0).then(pl.col("approach_sign"))
            .otherwise(side_of_level(pl.col("spot"), pl.col("level_price"))).cast(pl.Int8).alias("dir_sign")
        )
        .drop("approach_sign")
        .sort(["t_ns", "level_kind"])
    )
    last_bar = pl.DataFrame({"t_ns": times}).with_columns(
        value_asof(bars.bars_1m, "high", times).alias("last_bar_high"),
        value_asof(bars.bars_1m, "low", times).alias("last_bar_low"),
    )
    state = _context(queries.join(last_bar, on="t_ns", how="left"), events, inputs, window.rth_open_ns, config)
    state = _join(state, _kinematics(inputs, bars, times, queries, path))
    if inputs.has("T1"):
        state = _join(state, tape_features(inputs.trades, times), on=("t_ns",))
        state = _join(state, tape_level_features(inputs.trades, queries))
    if inputs.has("T2"):
        ofi_events = ofi_per_update(inputs.book)
        state = _join(state, ofi_features(ofi_events, times), on=("t_ns",))
        state = _join(state, near_level_ofi(inputs.book, ofi_events, queries))
        state = _join(state, liquidity_features(inputs.book, queries))
        state = _physics(state)
    if inputs.has("T3") and inputs.options is not None:
        o = inputs.options
        spot_at_t = market.select("t_ns", "spot")
        state = _join(state, dealer_features(queries, spot_at_t, o.definitions, o.trades, o.mbp1, o.open_interest))
    return conform_to_registry(state, inputs.tier)


def anchor_state(
    inputs: SessionInputs,
    bars: SessionBars,
    levels: pl.DataFrame,
    events: pl.DataFrame,
    config: StateConfig = StateConfig(),
) -> pl.DataFrame:
    """The state of each anchor's level at the anchor's own time (event_id + the state columns).

    The 30 s grid row at or before a touch can be up to a grid step old, and an approach's last
    seconds are when the defending wall shows, the flow tilts and the speed peaks. The same
    functions evaluated at the anchor time describe the touch itself, still causally: the
    anchoring print is the last datum (touch history counts touches strictly before it, so an
    anchor is never its own history)."""
    schema = {"event_id": pl.Utf8} | state_schema()
    if events.height == 0:
        return pl.DataFrame(schema=schema)
    rows = build_state(inputs, bars, levels, events, config, times=events["ts_ns"].to_numpy())
    keyed = events.select("event_id", pl.col("ts_ns").alias("t_ns"), "level_kind")
    return keyed.join(rows, on=["t_ns", "level_kind"], how="inner").select(list(schema)).cast(schema)


def _context(queries: pl.DataFrame, events: pl.DataFrame, inputs: SessionInputs, rth_open_ns: int, config: StateConfig):
    minutes = (pl.col("t_ns") - rth_open_ns) / (60 * NS_PER_S)
    with_history = touch_history(queries, events)
    stacked = dist_to_other_levels_atr(level_stacking(with_history.select("t_ns", "level_kind", "level_price", "atr")))
    return (
        with_history.join(stacked.drop("level_price", "atr"), on=["t_ns", "level_kind"], how="left")
        .with_columns(
            pl.lit(inputs.session).alias("session"),
            pl.lit(inputs.tier).alias("tier"),
            minutes.alias("minutes_since_open"),
            time_bucket_expr(minutes).alias("time_bucket"),
            (pl.col("spot") - pl.col("level_price")).alias("d"),
        )
        .with_columns(
            pl.when(pl.col("atr") > 0).then(pl.col("d") / pl.col("atr")).alias("d_atr"),
            pl.col("dir_sign").cast(pl.Float64).alias("approach_sign"),
            bar_reach_toward_atr(pl.col("last_bar_high"), pl.col("last_bar_low"), pl.col("level_price"),
                                 pl.col("dir_sign"), pl.col("atr")).alias("bar_reach_toward_atr"),
        )
        .with_columns(
            pl.col("d_atr").abs().alias("abs_d_atr"),
            toward_level(pl.col("d_atr"), pl.col("dir_sign")).alias("d_atr_toward"),
        )
    )


def _kinematics(inputs: SessionInputs, bars: SessionBars, times: np.ndarray, queries: pl.DataFrame, path: SpotPath) -> pl.DataFrame:
    fine = bars.bars_10s if bars.bars_10s is not None else bars.bars_1m
    sample_s = 10 if bars.bars_10s is not None else 60
    series = price_series_from_bars(fine)
    kin = kinematics(series, times, sample_s=sample_s)
    toward = kinematics_toward_level(kin, queries.select("t_ns", "level_kind", "dir_sign"))
    approach = approach_features(series, queries.select("t_ns", "level_kind", "level_price", "dir_sign", "atr"), sample_s=sample_s)
    prints = pl.DataFrame({"ts_ns": path.ts, "price": path.price}, schema=SERIES_SCHEMA)
    displacement = queries.select("t_ns", "level_kind").with_columns(
        displacement_toward_atr(prints, queries.select("t_ns", "dir_sign", "atr")))
    return toward.drop("dir_sign").join(
        approach.select("t_ns", "level_kind", "approach_velocity", "approach_bars", "approach_distance_atr"),
        on=["t_ns", "level_kind"],
        how="left",
    ).join(displacement, on=["t_ns", "level_kind"], how="left")


def _physics(state: pl.DataFrame) -> pl.DataFrame:
    return state.with_columns(
        (pl.col("dir_sign") * pl.col("ofi_60s")).cast(pl.Float64).alias("physics_force"),
        pl.col("defending_depth").cast(pl.Float64).alias("physics_mass"),
    ).with_columns((pl.col("physics_force") / (pl.col("physics_mass") + 1.0)).alias("physics_pressure"))


def _join(state: pl.DataFrame, other: pl.DataFrame, on: tuple[str, ...] = ("t_ns", "level_kind")) -> pl.DataFrame:
    keep = [c for c in other.columns if c in on or c not in state.columns]
    return state.join(other.select(keep), on=list(on), how="left", maintain_order="left")


def conform_to_registry(state: pl.DataFrame, tier: str) -> pl.DataFrame:
    """Key columns, then every registered feature in registry order: a feature the tier cannot
    supply is a null column (never 0), and nothing unregistered slips into the table."""
    defs = registry.all_features()
    in_approach = (pl.col("abs_d_atr") <= APPROACH_D_ATR) & (pl.col("approach_velocity") > 0)
    state = state.with_columns(in_approach.fill_null(False).alias("in_approach"))
    columns = [pl.col(c) for c in KEY_COLUMNS]
    for d in defs:
        supplied = tier_rank(tier) >= tier_rank(d.tier) and d.name in state.columns
        columns.append(pl.col(d.name).cast(pl.Float64) if supplied else pl.lit(None, dtype=pl.Float64).alias(d.name))
    return state.select(columns).sort(["t_ns", "level_kind"])


def state_schema() -> dict[str, pl.DataType]:
    keys = {
        "session": pl.Date,
        "t_ns": pl.Int64,
        "level_kind": pl.Utf8,
        "level_price": pl.Float64,
        "dir_sign": pl.Int8,
        "time_bucket": pl.Utf8,
        "tier": pl.Utf8,
        "in_approach": pl.Boolean,
    }
    return keys | {d.name: pl.Float64 for d in registry.all_features()}


EMPTY_EVENTS = pl.DataFrame(schema=EVENT_SCHEMA)
