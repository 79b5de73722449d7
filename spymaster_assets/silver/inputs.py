"""Reading one session's bronze (and earlier silver) partitions into the frames `lib.state` needs.

Only the columns and the time span a computation needs are read (Parquet predicate and
projection pushdown): the state table reaches back at most ~31 minutes before the open
(30-min liquidity look-back), so the book is scanned from 09:00 ET, not from 18:00.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from ..lake import Lake
from ..lib.calendar import previous_session, session_window
from ..lib.features.bars import BAR_SCHEMA
from ..lib.state import OptionsInputs, SessionBars, SessionInputs
from ..lib.tiers import session_tier, tier_rank

NS_PER_MIN = 60 * 1_000_000_000
BOOK_LOOKBACK_MIN = 35  # ≥ the longest look-back of any book feature (liquidity: 1811 s)
BOOK_COLUMNS = ["ts_event", "ts_recv"] + [
    f"{side}_{field}_{level:02d}" for level in range(10) for side in ("bid", "ask") for field in ("px", "sz")
]
TRADE_COLUMNS = ["ts_event", "ts_recv", "price", "size", "side", "aggressor"]


def session_tier_of(store: Lake, session: dt.date) -> str:
    manifest = store.read("raw", "dbn_files", session, columns=["venue", "schema"])
    return session_tier(set(zip(manifest["venue"], manifest["schema"])))


def _window_scan(store: Lake, table: str, session: dt.date, start_ns: int, end_ns: int, columns=None) -> pl.DataFrame:
    frame = store.scan("bronze", table, session)
    if columns is not None:
        frame = frame.select(columns)
    return frame.filter(pl.col("ts_event").is_between(start_ns, end_ns)).collect()


def load_session_inputs(store: Lake, session: dt.date, *, book: bool = True, options: bool = True) -> SessionInputs:
    """Bronze frames of the session for its tier (absent tiers stay None) + warm-up 2-min bars."""
    tier = session_tier_of(store, session)
    window = session_window(session)
    inputs = SessionInputs(session=session, tier=tier, warmup_bars_2m=previous_bars_2m(store, session))
    inputs.ohlcv_1m = store.read("bronze", "futures_ohlcv_1m", session)
    if tier_rank(tier) >= tier_rank("T1"):
        inputs.trades = store.read("bronze", "futures_trades", session, columns=TRADE_COLUMNS)
    lookback_start = window.rth_open_ns - BOOK_LOOKBACK_MIN * NS_PER_MIN
    if book and tier_rank(tier) >= tier_rank("T2"):
        inputs.book = _window_scan(store, "futures_mbp10", session, lookback_start, window.analysis_end_ns, BOOK_COLUMNS)
    if options and tier_rank(tier) >= tier_rank("T3"):
        inputs.options = OptionsInputs(
            definitions=store.read("bronze", "options_definitions", session),
            trades=store.read("bronze", "options_trades", session),
            mbp1=_window_scan(store, "options_mbp1", session, lookback_start, window.analysis_end_ns),
            open_interest=store.read("bronze", "options_open_interest", session),
        )
    return inputs


def previous_bars_2m(store: Lake, session: dt.date) -> pl.DataFrame | None:
    """The previous session's 2-min bars (the dynamic levels' warm-up), or None when absent,
    empty (a session flagged without data) or quarantined."""
    try:
        before = previous_session(session)
    except ValueError:
        return None
    if not store.has_partition("silver", "bars_2m", before):
        return None
    bars = store.read("silver", "bars_2m", before)
    return bars if bars.height else None


def read_bars(store: Lake, session: dt.date) -> SessionBars:
    bars_10s = store.read("silver", "bars_10s", session)
    return SessionBars(
        bars_10s=bars_10s if bars_10s.height else None,
        bars_1m=store.read("silver", "bars_1m", session),
        bars_2m=store.read("silver", "bars_2m", session),
    )


BARS_1M_SCHEMA = BAR_SCHEMA | {"atr": pl.Float64}
