"""Replay of one session's bronze events in timestamp order, paced by a speed factor (SPEC §11).

Each streamed bronze table is read once (only the columns and span the state table needs, as
`silver/inputs.py` reads them for the batch build) and sorted by the time its record becomes
*known*: `ts_event` for trades and book updates, the bar's close for a 1-minute bar (a bar is
stamped by its start but is usable only at its close, SPEC §6). The replay then cuts every
table at the same slice ends with one `searchsorted` per table: a slice holds, per table, the
records known in (previous end, end] — no Python loop over records. `EventSlice.merged()` gives
a slice's records of every table as one timestamp-ordered frame (polars `merge_sorted`).

Reference data is not streamed: the option definitions and the open-interest snapshot are the
session's instrument list and its pre-open statistic (the dealer kernel itself counts OI only
from its `oi_ts_event`).

Pacing: slice ends run on the event clock; with speed s > 0 the replay sleeps until the wall
clock has advanced (end − first paced end) / s since the first paced slice; speed 0 never sleeps.
Slices ending at or before `start` are *warm-up*: the engine digests them without emitting.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from ..lake import Lake
from ..lib.calendar import et_to_ns, session_window
from ..lib.state import OptionsInputs
from ..lib.tiers import tier_rank
from ..silver.inputs import BOOK_COLUMNS, BOOK_LOOKBACK_MIN, NS_PER_MIN, TRADE_COLUMNS, previous_bars_2m, session_tier_of

NS_PER_S = 1_000_000_000
KNOWN_AT = "known_at_ns"  # the replay clock of a record: when it becomes known
DEFAULT_START = dt.time(9, 22)
DEFAULT_SLICE_S = 5  # divides the 30 s grid step: every grid time is a slice end


@dataclass(frozen=True)
class StreamedTable:
    table: str
    tier: str  # the lowest session tier that has it
    delay_ns: int = 0  # known at ts_event + delay (a 1-min bar: at its close)
    columns: tuple[str, ...] | None = None
    book_window: bool = False  # read from the state table's book look-back before the open, like the batch


STREAMED_TABLES = (
    StreamedTable("futures_ohlcv_1m", "T0", delay_ns=60 * NS_PER_S),
    StreamedTable("futures_trades", "T1", columns=tuple(TRADE_COLUMNS)),
    StreamedTable("futures_mbp10", "T2", columns=tuple(BOOK_COLUMNS), book_window=True),
    StreamedTable("options_trades", "T3"),
    StreamedTable("options_mbp1", "T3", book_window=True),
)
TABLE_ORDER = {t.table: i for i, t in enumerate(STREAMED_TABLES)}


@dataclass(frozen=True)
class EventSlice:
    """Records of each streamed table known in (start_ns, end_ns], each sorted by `known_at_ns`."""

    start_ns: int
    end_ns: int
    tables: dict[str, pl.DataFrame]
    warmup: bool

    @property
    def n_events(self) -> int:
        return sum(f.height for f in self.tables.values())

    def merged(self) -> pl.DataFrame:
        """(known_at_ns, table, row) of every record in timestamp order across the tables; ties
        keep the table order of STREAMED_TABLES (and each table's own order)."""
        merged: pl.DataFrame | None = None
        for name in sorted(self.tables, key=TABLE_ORDER.__getitem__):
            frame = self.tables[name]
            keys = pl.DataFrame({KNOWN_AT: frame[KNOWN_AT], "table": pl.Series([name] * frame.height, dtype=pl.Utf8),
                                 "row": pl.Series(np.arange(frame.height, dtype=np.int64))})
            merged = keys if merged is None else merged.merge_sorted(keys, key=KNOWN_AT)
        return merged if merged is not None else pl.DataFrame(schema={KNOWN_AT: pl.Int64, "table": pl.Utf8, "row": pl.Int64})


@dataclass
class SessionData:
    """One session's streamed tables (sorted by known_at_ns) and its reference data."""

    session: dt.date
    tier: str
    tables: dict[str, pl.DataFrame]
    options_reference: OptionsInputs | None  # definitions + open interest (trades/mbp1 are streamed)
    warmup_bars_2m: pl.DataFrame | None = None

    @property
    def n_events(self) -> int:
        return sum(f.height for f in self.tables.values())


def read_session(store: Lake, session: dt.date) -> SessionData:
    """Every streamed table the session's tier has, sorted by the time each record becomes known."""
    tier = session_tier_of(store, session)
    window = session_window(session)
    book_start = window.rth_open_ns - BOOK_LOOKBACK_MIN * NS_PER_MIN
    tables = {}
    for spec in STREAMED_TABLES:
        if tier_rank(tier) < tier_rank(spec.tier):
            continue
        frame = store.scan("bronze", spec.table, session)
        if spec.columns is not None:
            frame = frame.select(list(spec.columns))
        if spec.book_window:
            frame = frame.filter(pl.col("ts_event").is_between(book_start, window.analysis_end_ns))
        tables[spec.table] = (frame.with_columns((pl.col("ts_event") + spec.delay_ns).alias(KNOWN_AT))
                              .sort(KNOWN_AT, maintain_order=True).collect())
    reference = None
    if tier_rank(tier) >= tier_rank("T3"):
        empty = pl.DataFrame()
        reference = OptionsInputs(definitions=store.read("bronze", "options_definitions", session), trades=empty,
                                  mbp1=empty, open_interest=store.read("bronze", "options_open_interest", session))
    return SessionData(session, tier, tables, reference, previous_bars_2m(store, session))


@dataclass
class Replay:
    """Slices of a session's events at `speed` from `start` (ET) to `end` (ET, default 12:30)."""

    data: SessionData
    speed: float = 0.0
    start: dt.time = DEFAULT_START
    end: dt.time | None = None
    slice_s: int = DEFAULT_SLICE_S
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    slept_s: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if self.speed < 0:
            raise ValueError(f"speed must be ≥ 0 (0 = as fast as possible), got {self.speed}")
        if self.slice_s <= 0 or 30 % self.slice_s:
            raise ValueError(f"slice_s must divide the 30 s grid step, got {self.slice_s}")

    @property
    def start_ns(self) -> int:
        return et_to_ns(self.data.session, self.start)

    @property
    def end_ns(self) -> int:
        window = session_window(self.data.session)
        return window.analysis_end_ns if self.end is None else et_to_ns(self.data.session, self.end)

    def slice_ends(self) -> np.ndarray:
        """Slice ends on the `slice_s` grid of the clock, from the first one after the earliest
        record to `end` (the first slice holds everything before it)."""
        step = self.slice_s * NS_PER_S
        firsts = [int(f[KNOWN_AT][0]) for f in self.data.tables.values() if f.height]
        first = min(firsts + [self.start_ns])
        first_end = (first // step + 1) * step
        return np.arange(first_end, self.end_ns + 1, step, dtype=np.int64)

    def slices(self) -> Iterator[EventSlice]:
        ends = self.slice_ends()
        cuts = {name: np.searchsorted(frame[KNOWN_AT].to_numpy(), ends, side="right")
                for name, frame in self.data.tables.items()}
        start_ns = self.start_ns
        paced_from: tuple[int, float] | None = None
        previous_end, previous_cut = int(ends[0]) - self.slice_s * NS_PER_S, {name: 0 for name in cuts}
        for i, end in enumerate(ends.tolist()):
            warmup = end <= start_ns
            if not warmup and self.speed > 0:
                if paced_from is None:
                    paced_from = (previous_end, self.clock())
                due = paced_from[1] + (end - paced_from[0]) / NS_PER_S / self.speed
                wait = due - self.clock()
                if wait > 0:
                    self.sleep(wait)
                    self.slept_s += wait
            tables = {name: self.data.tables[name].slice(previous_cut[name], int(c[i]) - previous_cut[name])
                      for name, c in cuts.items()}
            yield EventSlice(previous_end, end, tables, warmup)
            previous_end, previous_cut = end, {name: int(c[i]) for name, c in cuts.items()}
