"""Replay: timestamp order across schemas, pacing by the speed factor, warm-up slices."""

import datetime as dt
import time

import numpy as np
import polars as pl
import pytest

from spymaster_assets.lib.calendar import et_to_ns
from spymaster_assets.live.replay import KNOWN_AT, Replay, SessionData

DAY = dt.date(2024, 12, 10)
NS = 1_000_000_000
OPEN = et_to_ns(DAY, dt.time(9, 30))


def table(ts: list[int], delay_ns: int = 0, **columns) -> pl.DataFrame:
    frame = pl.DataFrame({"ts_event": pl.Series(ts, dtype=pl.Int64), **columns})
    return frame.with_columns((pl.col("ts_event") + delay_ns).alias(KNOWN_AT)).sort(KNOWN_AT, maintain_order=True)


def three_tables() -> SessionData:
    """Trades, book updates and 1-min bars interleaved, with ties across tables and a bar that is
    stamped by its start but known only at its close."""
    trades = table([OPEN - 7 * NS, OPEN + 1, OPEN + 5 * NS, OPEN + 5 * NS, OPEN + 61 * NS], price=[1.0, 2.0, 3.0, 4.0, 5.0])
    book = table([OPEN - 30 * NS, OPEN + 1, OPEN + 4 * NS, OPEN + 60 * NS, OPEN + 95 * NS], bid=[10.0, 11.0, 12.0, 13.0, 14.0])
    bars = table([OPEN - 60 * NS, OPEN, OPEN + 60 * NS], delay_ns=60 * NS, close=[100.0, 101.0, 102.0])
    return SessionData(DAY, "T2", {"futures_ohlcv_1m": bars, "futures_trades": trades, "futures_mbp10": book}, None)


def test_slices_merge_every_schema_in_timestamp_order_each_record_once():
    data = three_tables()
    replay = Replay(data, start=dt.time(9, 30), end=dt.time(9, 32), slice_s=5)
    slices = list(replay.slices())
    merged = pl.concat([s.merged() for s in slices])
    assert merged.height == data.n_events == 13
    assert merged[KNOWN_AT].is_sorted()
    # Each record in the slice whose (start, end] holds its known time (the first slice: everything before its end).
    for s in slices[1:]:
        for frame in s.tables.values():
            assert frame[KNOWN_AT].is_between(s.start_ns, s.end_ns, closed="right").all()
    order = merged.select(pl.col(KNOWN_AT) - OPEN, "table").rows()
    # The bar stamped 09:30 is known at its close, 09:31, after the 09:30:05 trades; ties keep the table order.
    assert order == [(-30 * NS, "futures_mbp10"), (-7 * NS, "futures_trades"), (0, "futures_ohlcv_1m"),
                     (1, "futures_trades"), (1, "futures_mbp10"), (4 * NS, "futures_mbp10"),
                     (5 * NS, "futures_trades"), (5 * NS, "futures_trades"), (60 * NS, "futures_ohlcv_1m"),
                     (60 * NS, "futures_mbp10"), (61 * NS, "futures_trades"), (95 * NS, "futures_mbp10"),
                     (120 * NS, "futures_ohlcv_1m")]
    prices = pl.concat([s.tables["futures_trades"] for s in slices])["price"].to_list()
    assert prices == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_slices_before_the_start_are_warm_up_and_end_on_the_grid():
    replay = Replay(three_tables(), start=dt.time(9, 30, 30), end=dt.time(9, 31), slice_s=5)
    slices = list(replay.slices())
    assert all(s.warmup == (s.end_ns <= et_to_ns(DAY, dt.time(9, 30, 30))) for s in slices)
    assert slices[0].warmup and not slices[-1].warmup and slices[-1].end_ns == et_to_ns(DAY, dt.time(9, 31))
    assert all((s.end_ns % (5 * NS)) == 0 for s in slices)
    with pytest.raises(ValueError, match="divide"):
        Replay(three_tables(), slice_s=7)
    with pytest.raises(ValueError, match="speed"):
        Replay(three_tables(), speed=-1)


def test_speed_zero_never_sleeps():
    naps = []
    replay = Replay(three_tables(), speed=0, start=dt.time(9, 30), end=dt.time(9, 32), sleep=naps.append)
    began = time.perf_counter()
    assert sum(s.n_events for s in replay.slices()) == 13
    assert naps == [] and time.perf_counter() - began < 1.0


def test_speed_paces_the_event_clock_against_a_fake_wall_clock():
    now = [0.0]
    replay = Replay(three_tables(), speed=10, start=dt.time(9, 30), end=dt.time(9, 31), slice_s=5,
                    clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    ends = [(s.end_ns, now[0]) for s in replay.slices() if not s.warmup]
    # 60 s of events at 10× take 6 s of wall clock; slice k is released at k·0.5 s.
    assert [round(wall, 6) for _, wall in ends] == [round(0.5 * (k + 1), 6) for k in range(12)]
    assert replay.slept_s == pytest.approx(6.0)


def test_speed_one_takes_real_time():
    replay = Replay(three_tables(), speed=1, start=dt.time(9, 30), end=dt.time(9, 30, 3), slice_s=1)
    began = time.perf_counter()
    events = sum(s.n_events for s in replay.slices())
    elapsed = time.perf_counter() - began
    assert events == 5  # everything known by 09:30:03
    assert 2.9 <= elapsed < 4.0, elapsed


def test_slice_cuts_are_searchsorted_not_per_record():
    """A large table is cut with one searchsorted per table (no per-record Python work)."""
    n = 400_000
    ts = np.sort(np.random.default_rng(0).integers(OPEN - 600 * NS, OPEN + 3 * 3600 * NS, n))
    data = SessionData(DAY, "T1", {"futures_trades": table(ts.tolist(), price=np.ones(n))}, None)
    began = time.perf_counter()
    total = sum(s.n_events for s in Replay(data, start=dt.time(9, 30), slice_s=5).slices())
    assert total == int((ts <= et_to_ns(DAY, dt.time(12, 30))).sum())
    assert time.perf_counter() - began < 10.0
