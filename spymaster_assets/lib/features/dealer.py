"""Dealer gamma exposure (GEX) around each level and options premium flow ("tide"), tier T3.

Everything at grid time t uses data with ts_event ≤ t only.

Dealer position per option at t (contracts, + = dealer long):
    position = oi_sign(right) · OI  +  Σ_{trades ≤ t, ts ≥ flow_start} (−aggressor · size)
- Flow: **dealers are short what customers buy** (SPEC §2). A buyer-initiated trade
  (aggressor +1, Databento side 'B') is a customer buy → −size to the dealer; a
  seller-initiated one (−1) → +size; unknown aggressor (0) → nothing.
- Open interest (unsigned in the data) enters through `DealerConfig.oi_convention`:
  * "customer_long_puts_short_calls" (default): the customary GEX convention (e.g.
    SqueezeMetrics): customers hold puts as protection and write calls against stock, so
    dealers are long call OI (+OI) and short put OI (−OI). Same "dealer short what customers
    bought" rule, applied to an assumed customer side of the standing OI.
  * "customer_long": customers long all OI → dealers −OI on calls and puts.
  * "exclude": OI ignored; only today's signed flow counts (pure observed data, but the map
    starts at 0 each session).
  The OI row counts only once published (oi_ts_event ≤ t); bronze keeps the latest
  OPEN_INTEREST statistic before the RTH open. Flow starts at `flow_start_ns` (default: all
  trades supplied, i.e. the bronze window from the Globex open, after the OI snapshot).
  Positions are cumulative, not windowed: a live engine keeps an exact integer running sum per
  option from flow_start (that is the "trailing buffer" for positions).

Per option at t (options with expiration > t only):
- spot F = the front-month future's price at t (supplied by the caller);
- T = max(expiration − t, min_tte_minutes) in years (ACT/365: 365 × 86,400 s);
- implied vol from the option's own NBBO mid at t (last mbp-1 record ≤ t; valid when
  0 < bid ≤ ask, both finite, and the mid is inside Black-76's no-arbitrage bounds).
  Fallback when there is none: the IV of the nearest strike with a mid-based IV, same t, same
  right, same expiration (tie → the lower strike); else `fallback_iv` (0.20). `iv_source`
  says which ("mid" / "neighbour" / "constant");
- gamma = Black-76 ∂²V/∂F² per point² (r = `rate`, default 0);
- GEX = position · gamma · F² · 0.01 · multiplier (50 for ES) — **USD change of the dealers'
  delta (as notional) for a 1 % move of the underlying**. Negative = dealers short gamma
  (their hedging amplifies moves), positive = long gamma (dampens).

Per (t, level L), strike step s (inferred from the definitions: most common gap between
consecutive distinct strikes, e.g. 5 pt; `strike_step` overrides; 5 pt when a single strike
leaves nothing to infer from):
- gex_band_{1,2,3}: Σ GEX over options with |K − L| ≤ k·s (both rights, all expirations);
- gex_calls_band_2 / gex_puts_band_2: the same over calls / puts, k = 2;
- gex_asymmetry = (A − B)/(|A| + |B|) with A = Σ GEX of strikes L < K ≤ L + 3s, B = Σ GEX of
  L − 3s ≤ K < L (strikes exactly at L are in neither); null when both are 0. Not multiplied
  by dir_sign: + means more (signed) gamma above the level;
- net_gex: Σ GEX over every option (level-independent).
- flow_gex_band_{2}: like gex_band_2 but from today's signed flow alone (position = the
  cumulative dealer flow, open interest left out whatever the convention). OI is unsigned in
  the data, so the OI-based features rest on an assumed customer side of the standing
  positions, while the flow side is observed (the aggressor of each trade). Both are kept:
  on a day whose customer flow dominates near the level (e.g. 0DTE) the flow-only sign can
  differ from the OI-based one, and the model and the learned metric weigh whichever decides
  outcomes. (On the planted market, where OI is random and only the flow is planted, the
  OI-based sign disagrees with the planted dealer gamma on ~1/3 of the touches.)
Tide (level-independent, customer-signed premium in USD):
    tide_{calls,puts}_{30s,5min} = Σ price · size · multiplier · aggressor over trades with
    t − W < ts_event ≤ t, price rounded to 0.01 pt so window sums are exact integers
    (independent of older data, bit for bit). + = customers net buying premium.
A row whose spot is unknown has null GEX features; with no option definitions every dealer
feature is null (tier absent), never 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from . import black76
from .registry import Missing, feature

NS_PER_S = 1_000_000_000
NS_PER_YEAR = 365 * 86_400 * NS_PER_S
OI_CONVENTIONS = ("customer_long_puts_short_calls", "customer_long", "exclude")
STRIKE_EPS = 1e-6
DEFAULT_STRIKE_STEP = 5.0  # ES options' standard strike spacing, used when it cannot be inferred


@dataclass(frozen=True)
class DealerConfig:
    oi_convention: str = "customer_long_puts_short_calls"
    multiplier: float = 50.0  # ES options: $50 per index point
    rate: float = 0.0
    fallback_iv: float = 0.20
    min_tte_minutes: float = 5.0
    bands: tuple[int, ...] = (1, 2, 3)
    split_band: int = 2
    asymmetry_band: int = 3
    tide_windows_s: tuple[int, ...] = (30, 300)
    strike_step: float | None = None
    flow_start_ns: int | None = None

    def __post_init__(self) -> None:
        if self.oi_convention not in OI_CONVENTIONS:
            raise ValueError(f"oi_convention must be one of {OI_CONVENTIONS}, got {self.oi_convention!r}")

    def oi_sign(self, is_call: np.ndarray) -> np.ndarray:
        if self.oi_convention == "customer_long_puts_short_calls":
            return np.where(is_call, 1.0, -1.0)
        if self.oi_convention == "customer_long":
            return np.full(len(is_call), -1.0)
        return np.zeros(len(is_call))


def _window_name(seconds: int) -> str:
    return f"{seconds}s" if seconds < 60 or seconds % 60 else f"{seconds // 60}min"


def gex_columns(config: DealerConfig) -> list[str]:
    return [*[f"gex_band_{k}" for k in config.bands], f"gex_calls_band_{config.split_band}",
            f"gex_puts_band_{config.split_band}", "gex_asymmetry", "net_gex", f"flow_gex_band_{config.split_band}"]


def tide_columns(config: DealerConfig) -> list[str]:
    return [f"tide_{side}_{_window_name(w)}" for w in config.tide_windows_s for side in ("calls", "puts")]


DEFAULT = DealerConfig()

FEATURES = [
    *[
        feature(f"gex_band_{k}", "dealer", "T3", "USD/1%", "-",
                f"dealer gamma at strikes within ±{k} strike(s) of the level (− = dealers short gamma: moves amplify)", True)
        for k in DEFAULT.bands
    ],
    feature("gex_calls_band_2", "dealer", "T3", "USD/1%", "-", "dealer gamma in calls within ±2 strikes of the level", True),
    feature("gex_puts_band_2", "dealer", "T3", "USD/1%", "-", "dealer gamma in puts within ±2 strikes of the level", True),
    feature("gex_asymmetry", "dealer", "T3", "ratio", "-",
            "dealer gamma just above vs just below the level (±3 strikes), −1…+1", True,
            missing=Missing("no dealer gamma within ±3 strikes on either side of the level: no skew", 0.0)),
    feature("net_gex", "dealer", "T3", "USD/1%", "-", "total dealer gamma across all strikes (market-wide regime)"),
    feature("flow_gex_band_2", "dealer", "T3", "USD/1%", "session",
            "dealer gamma within ±2 strikes of the level from today's options trades alone (no open interest; "
            "− = customers bought gamma today, dealers short)", True),
    *[
        feature(f"tide_{side}_{_window_name(w)}", "dealer", "T3", "USD", _window_name(w),
                f"net customer premium bought in {side} over the last {_window_name(w)} (+ = buying)")
        for w in DEFAULT.tide_windows_s
        for side in ("calls", "puts")
    ],
]


def infer_strike_step(definitions: pl.DataFrame) -> float | None:
    """Most common gap between consecutive distinct strikes (ties → the smaller gap)."""
    strikes = np.unique(np.round(definitions["strike"].drop_nulls().to_numpy().astype(np.float64), 6))
    gaps = np.round(np.diff(strikes), 6)
    gaps = gaps[gaps > 0]
    if len(gaps) == 0:
        return None
    values, counts = np.unique(gaps, return_counts=True)
    return float(values[np.argmax(counts)])


def _definitions(definitions: pl.DataFrame) -> pl.DataFrame:
    return (
        definitions.select("instrument_id", "right", "strike", "expiration")
        .unique("instrument_id", keep="last", maintain_order=True)
        .filter(pl.col("right").is_in(["C", "P"]) & pl.col("strike").is_not_null() & pl.col("expiration").is_not_null())
        .with_columns(pl.col("instrument_id").cast(pl.UInt32), pl.col("expiration").cast(pl.Int64))
    )


def _asof(grid: pl.DataFrame, right: pl.DataFrame, on: str) -> pl.DataFrame:
    """Backward as-of join by instrument (right: one row per instrument and `on`)."""
    return grid.join_asof(
        right.sort(on), left_on="t_ns", right_on=on, by="instrument_id", strategy="backward", check_sortedness=False
    )


def option_state(
    times,
    spot_at_t: pl.DataFrame,
    definitions: pl.DataFrame,
    trades: pl.DataFrame,
    mbp1: pl.DataFrame,
    open_interest: pl.DataFrame | None,
    config: DealerConfig = DEFAULT,
) -> pl.DataFrame:
    """One row per (t, live option): t_ns, instrument_id, right, strike, expiration, spot,
    tte_years, bid, ask, position, iv, iv_source, gamma, gex, flow_gex (the GEX of today's flow
    alone). Sorted by t_ns, strike, right,
    expiration, instrument_id."""
    times = np.unique(np.asarray(times, dtype=np.int64))
    t_max = int(times.max()) if len(times) else 0
    defs = _definitions(definitions)
    grid = (
        pl.DataFrame({"t_ns": times}, schema={"t_ns": pl.Int64})
        .join(defs, how="cross")
        .filter(pl.col("expiration") > pl.col("t_ns"))
        .join(
            spot_at_t.select(pl.col("t_ns").cast(pl.Int64), pl.col("spot").cast(pl.Float64)).unique("t_ns", keep="last", maintain_order=True),
            on="t_ns",
            how="left",
        )
        .sort("t_ns")
    )

    quotes = (
        mbp1.filter(pl.col("ts_event") <= t_max)
        .select(pl.col("instrument_id").cast(pl.UInt32), "ts_event", pl.col("bid_px_00").alias("bid"), pl.col("ask_px_00").alias("ask"))
        .sort("ts_event", maintain_order=True)
        .unique(["instrument_id", "ts_event"], keep="last", maintain_order=True)
    )
    grid = _asof(grid, quotes, "ts_event").drop("ts_event")

    flow_trades = trades.filter(pl.col("ts_event") <= t_max)
    if config.flow_start_ns is not None:
        flow_trades = flow_trades.filter(pl.col("ts_event") >= config.flow_start_ns)
    flow = (
        flow_trades.select(
            pl.col("instrument_id").cast(pl.UInt32),
            "ts_event",
            (-pl.col("aggressor").cast(pl.Int64) * pl.col("size").cast(pl.Int64)).alias("dealer_flow"),
        )
        .group_by("instrument_id", "ts_event")
        .agg(pl.col("dealer_flow").sum())
        .sort("instrument_id", "ts_event")
        .with_columns(pl.col("dealer_flow").cum_sum().over("instrument_id").alias("cum_flow"))
        .select("instrument_id", "ts_event", "cum_flow")
    )
    grid = _asof(grid, flow, "ts_event").drop("ts_event").with_columns(pl.col("cum_flow").fill_null(0))

    if open_interest is not None and open_interest.height:
        oi = (
            open_interest.select(pl.col("instrument_id").cast(pl.UInt32), "oi_ts_event", pl.col("open_interest").cast(pl.Int64))
            .sort("oi_ts_event")
            .unique("instrument_id", keep="last", maintain_order=True)
        )
        grid = grid.join(oi, on="instrument_id", how="left").with_columns(
            pl.when(pl.col("oi_ts_event") <= pl.col("t_ns")).then(pl.col("open_interest")).otherwise(0).fill_null(0).alias("oi")
        ).drop("oi_ts_event", "open_interest")
    else:
        grid = grid.with_columns(pl.lit(0, pl.Int64).alias("oi"))

    grid = grid.sort("t_ns", "strike", "right", "expiration", "instrument_id")
    is_call = (grid["right"] == "C").to_numpy()
    spot = grid["spot"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    strike = grid["strike"].to_numpy().astype(np.float64)
    tte_ns = np.maximum(grid["expiration"].to_numpy() - grid["t_ns"].to_numpy(), int(config.min_tte_minutes * 60 * NS_PER_S))
    tte = tte_ns / NS_PER_YEAR
    bid = grid["bid"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    ask = grid["ask"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    quoted = np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (ask >= bid)
    mid = np.where(quoted, 0.5 * (bid + ask), np.nan)
    iv = black76.implied_vol(mid, spot, strike, tte, is_call, config.rate)
    position = config.oi_sign(is_call) * grid["oi"].to_numpy() + grid["cum_flow"].to_numpy()

    grid = grid.with_columns(
        pl.Series("tte_years", tte),
        pl.Series("position", position),
        pl.Series("iv", iv).fill_nan(None),
    )
    grid = _fill_iv(grid, config.fallback_iv)
    sigma = grid["iv"].to_numpy()
    gam = black76.gamma(spot, strike, tte, sigma, config.rate)
    dollar_gamma = gam * spot * spot * 0.01 * config.multiplier
    flow_gex = grid["cum_flow"].to_numpy() * dollar_gamma
    return grid.with_columns(pl.Series("gamma", gam).fill_nan(None), pl.Series("gex", position * dollar_gamma).fill_nan(None),
                             pl.Series("flow_gex", flow_gex).fill_nan(None)).select(
        "t_ns", "instrument_id", "right", "strike", "expiration", "spot", "tte_years", "bid", "ask",
        "position", "iv", "iv_source", "gamma", "gex", "flow_gex",
    )


def _fill_iv(grid: pl.DataFrame, fallback_iv: float) -> pl.DataFrame:
    """Missing IV ← nearest strike's mid IV (same t, right, expiration; tie → lower strike),
    else the constant."""
    keys = ["t_ns", "right", "expiration"]
    known = grid.filter(pl.col("iv").is_not_null()).select(*keys, "strike", "iv").sort("strike")
    missing = grid.with_row_index("_row").filter(pl.col("iv").is_null()).select("_row", *keys, "strike").sort("strike")
    below = missing.join_asof(
        known.rename({"strike": "_k_lo", "iv": "_iv_lo"}), left_on="strike", right_on="_k_lo", by=keys,
        strategy="backward", check_sortedness=False,
    )
    both = below.sort("strike").join_asof(
        known.rename({"strike": "_k_hi", "iv": "_iv_hi"}), left_on="strike", right_on="_k_hi", by=keys,
        strategy="forward", check_sortedness=False,
    )
    neighbour = both.select(
        "_row",
        pl.when(pl.col("_iv_hi").is_null() | ((pl.col("strike") - pl.col("_k_lo")) <= (pl.col("_k_hi") - pl.col("strike"))))
        .then(pl.col("_iv_lo"))
        .otherwise(pl.col("_iv_hi"))
        .alias("_iv_nb"),
    )
    return (
        grid.with_row_index("_row")
        .join(neighbour, on="_row", how="left")
        .sort("_row")
        .with_columns(
            pl.when(pl.col("iv").is_not_null()).then(pl.lit("mid"))
            .when(pl.col("_iv_nb").is_not_null()).then(pl.lit("neighbour"))
            .otherwise(pl.lit("constant")).alias("iv_source"),
            pl.coalesce("iv", "_iv_nb", pl.lit(fallback_iv)).alias("iv"),
        )
        .drop("_row", "_iv_nb")
    )


def premium_tide(trades: pl.DataFrame, times, config: DealerConfig = DEFAULT) -> pl.DataFrame:
    """t_ns plus tide_{calls,puts}_{W} for each window W: customer-signed premium (USD) of the
    option trades with t − W < ts_event ≤ t."""
    times = np.asarray(times, dtype=np.int64)
    out: dict[str, np.ndarray] = {"t_ns": times}
    for right, side in (("C", "calls"), ("P", "puts")):
        sub = trades.filter(pl.col("right") == right).sort("ts_event", maintain_order=True)
        ts = sub["ts_event"].to_numpy()
        cents = (
            np.round(sub["price"].cast(pl.Float64).fill_nan(0.0).fill_null(0.0).to_numpy() * 100.0).astype(np.int64)
            * sub["size"].to_numpy().astype(np.int64)
            * sub["aggressor"].to_numpy().astype(np.int64)
        )
        cum = np.concatenate(([0], np.cumsum(cents)))  # exact integers: window sums depend on the window only
        hi = np.searchsorted(ts, times, side="right")
        for w in config.tide_windows_s:
            lo = np.searchsorted(ts, times - w * NS_PER_S, side="right")
            out[f"tide_{side}_{_window_name(w)}"] = (cum[hi] - cum[lo]) * (config.multiplier / 100.0)
    return pl.DataFrame(out)


def _band_sums(state: pl.DataFrame, queries: pl.DataFrame, step: float, config: DealerConfig) -> dict[str, np.ndarray]:
    out = {name: np.full(queries.height, np.nan) for name in gex_columns(config)}
    q_t = queries["t_ns"].to_numpy().astype(np.int64)
    q_level = queries["level_price"].to_numpy().astype(np.float64)
    s_t = state["t_ns"].to_numpy()
    strike = state["strike"].to_numpy().astype(np.float64)
    gex = state["gex"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    flow_gex = state["flow_gex"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    is_call = (state["right"] == "C").to_numpy()
    for t in np.unique(q_t):  # one pass per grid time (~361), vectorized over options × levels
        rows = np.flatnonzero(q_t == t)
        lo, hi = np.searchsorted(s_t, t, side="left"), np.searchsorted(s_t, t, side="right")
        g, k, c, fg = gex[lo:hi], strike[lo:hi], is_call[lo:hi], flow_gex[lo:hi]
        if np.isnan(g).any():  # spot unknown at t
            continue
        d = k[None, :] - q_level[rows, None]
        for band in config.bands:
            out[f"gex_band_{band}"][rows] = np.where(np.abs(d) <= band * step + STRIKE_EPS, g, 0.0).sum(axis=1)
        split = np.abs(d) <= config.split_band * step + STRIKE_EPS
        out[f"flow_gex_band_{config.split_band}"][rows] = np.where(split, fg, 0.0).sum(axis=1)
        out[f"gex_calls_band_{config.split_band}"][rows] = np.where(split & c, g, 0.0).sum(axis=1)
        out[f"gex_puts_band_{config.split_band}"][rows] = np.where(split & ~c, g, 0.0).sum(axis=1)
        reach = config.asymmetry_band * step + STRIKE_EPS
        above = np.where((d > STRIKE_EPS) & (d <= reach), g, 0.0).sum(axis=1)
        below = np.where((d < -STRIKE_EPS) & (d >= -reach), g, 0.0).sum(axis=1)
        denom = np.abs(above) + np.abs(below)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["gex_asymmetry"][rows] = np.where(denom > 0, (above - below) / denom, np.nan)
        out["net_gex"][rows] = g.sum()
    return out


def dealer_features(
    queries: pl.DataFrame,
    spot_at_t: pl.DataFrame,
    definitions: pl.DataFrame,
    trades: pl.DataFrame,
    mbp1: pl.DataFrame,
    open_interest: pl.DataFrame | None = None,
    config: DealerConfig = DEFAULT,
) -> pl.DataFrame:
    """queries (t_ns, level_kind, level_price, dir_sign, …) plus the GEX and tide columns.

    spot_at_t: (t_ns, spot). definitions / trades / mbp1 / open_interest: the bronze options
    tables (trades and mbp1 need instrument_id and ts_event; trades also price, size,
    aggressor, right). See the module docstring for every definition."""
    times = queries["t_ns"].to_numpy().astype(np.int64)
    if definitions.height == 0:  # tier T3 absent: null, never 0
        return queries.with_columns([pl.lit(None, pl.Float64).alias(c) for c in [*gex_columns(config), *tide_columns(config)]])
    step = config.strike_step or infer_strike_step(definitions) or DEFAULT_STRIKE_STEP
    state = option_state(np.unique(times), spot_at_t, definitions, trades, mbp1, open_interest, config)
    bands = _band_sums(state, queries, step, config)
    tide = premium_tide(trades, times, config).drop("t_ns")
    return queries.with_columns(
        *[pl.Series(name, values).fill_nan(None) for name, values in bands.items()],
        *[tide[c] for c in tide.columns],
    )
