"""Bars, ATR and levels: hand-computed fixtures, causality and trailing-buffer properties."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from spymaster_assets.lib.calendar import et_to_ns, session_window
from spymaster_assets.lib.features import bars as br
from spymaster_assets.lib.features import levels as lv

S = 1_000_000_000
M = 60 * S
SESSION = dt.date(2024, 3, 12)  # EDT (DST began 2024-03-10); previous session 2024-03-11
W = session_window(SESSION)


def trades(rows):
    """rows: (ts_ns, price, size, aggressor)."""
    ts, px, size, aggr = zip(*rows)
    return pl.DataFrame(
        {"ts_event": list(ts), "price": list(px), "size": list(size), "aggressor": list(aggr)},
        schema={"ts_event": pl.Int64, "price": pl.Float64, "size": pl.UInt32, "aggressor": pl.Int8},
    )


def bars_1m(start_ns, hlc):
    """1-min bars from (high, low, close) triples, consecutive minutes from start_ns."""
    n = len(hlc)
    start = start_ns + M * np.arange(n, dtype=np.int64)
    high, low, close = (np.array(c, dtype=float) for c in zip(*hlc))
    return pl.DataFrame(
        {"bar_start_ns": start, "bar_end_ns": start + M, "open": close, "high": high, "low": low, "close": close,
         "volume": np.ones(n, dtype=np.uint64)}
    ).with_columns(
        pl.lit(None, pl.UInt64).alias("buy_volume"), pl.lit(None, pl.UInt64).alias("sell_volume"),
        pl.lit(None, pl.UInt32).alias("trade_count"), pl.lit(None, pl.Float64).alias("vwap"),
    ).select(list(br.BAR_SCHEMA))


def random_trades(rng, start_ns, end_ns, n):
    ts = np.sort(rng.integers(start_ns, end_ns, n))
    ts[::50] = ts[::50] - ts[::50] % (10 * S)  # some trades exactly on bar boundaries
    ts = np.sort(ts)
    return pl.DataFrame({
        "ts_event": ts,
        "price": 5000 + 0.25 * np.cumsum(rng.integers(-2, 3, n)),
        "size": rng.integers(1, 20, n).astype(np.uint32),
        "aggressor": rng.choice([-1, 0, 1], n).astype(np.int8),
    })


def perturb_after(frame, t, rng, ts_col="ts_event"):
    """Every event after t changed (price, size, side) plus new events inserted after t."""
    before = frame.filter(pl.col(ts_col) <= t)
    after = frame.filter(pl.col(ts_col) > t)
    n = after.height
    changed = after.with_columns(
        pl.Series("price", rng.uniform(1000, 9000, n)),
        pl.Series("size", rng.integers(1, 500, n).astype(np.uint32)),
        pl.Series("aggressor", rng.choice([-1, 0, 1], n).astype(np.int8)),
    )
    extra_ts = np.sort(t + 1 + rng.integers(0, 10 * M, 200))
    extra_ts[0] = t + 1  # one event right after t, in the still-open bar
    extra = pl.DataFrame({"ts_event": extra_ts, "price": rng.uniform(1000, 9000, 200),
                          "size": rng.integers(1, 500, 200).astype(np.uint32),
                          "aggressor": rng.choice([-1, 0, 1], 200).astype(np.int8)})
    return pl.concat([before, changed, extra.select(changed.columns)]).sort(ts_col, maintain_order=True)


# ---------------------------------------------------------------- bars


def test_bars_from_hand_made_trades():
    t0 = 1_700_000_000 * S  # a multiple of 10 s and of 60 s
    tr = trades([
        (t0 + 1 * S, 100.00, 2, 1),
        (t0 + 4 * S, 101.00, 1, -1),
        (t0 + 4 * S, 99.50, 3, 0),   # same timestamp: file order decides open/close
        (t0 + 10 * S, 100.25, 4, -1),  # exactly on the boundary → next bar
        (t0 + 35 * S, 102.00, 1, 1),   # [t0+20, t0+30) is empty → no row
    ])
    b = br.bars_from_trades(tr, 10)
    assert b.columns == list(br.BAR_SCHEMA) and b.schema == pl.Schema(br.BAR_SCHEMA)
    assert b["bar_start_ns"].to_list() == [t0, t0 + 10 * S, t0 + 30 * S]
    assert b["bar_end_ns"].to_list() == [t0 + 10 * S, t0 + 20 * S, t0 + 40 * S]
    first = b.row(0, named=True)
    assert (first["open"], first["high"], first["low"], first["close"]) == (100.0, 101.0, 99.5, 99.5)
    assert (first["volume"], first["buy_volume"], first["sell_volume"], first["trade_count"]) == (6, 2, 1, 3)
    assert first["vwap"] == pytest.approx((200.0 + 101.0 + 298.5) / 6)
    assert b["sell_volume"].to_list() == [1, 4, 0] and b["buy_volume"].to_list() == [2, 0, 1]

    m1 = br.bars_from_trades(tr, 60)
    assert m1.height == 1 and m1["volume"][0] == 11 and m1["close"][0] == 102.0 and m1["open"][0] == 100.0
    # Resampling the 10 s bars gives the 1-min bar built from trades directly.
    resampled = br.resample_bars(b, 60)
    assert resampled.drop("vwap").equals(m1.drop("vwap"))
    assert resampled["vwap"][0] == pytest.approx(m1["vwap"][0])


def test_bar_grid_is_utc_epoch_aligned_and_matches_et_minutes():
    t = W.rth_open_ns + 7 * S
    b = br.bars_from_trades(trades([(t, 1.0, 1, 1)]), 120)
    assert b["bar_start_ns"][0] == W.rth_open_ns  # 09:30 ET starts a 2-min bar


def test_2m_from_1m_missing_minute_rule():
    start = W.rth_open_ns
    one = bars_1m(start, [(10, 8, 9), (12, 9, 11), (13, 12, 12)])  # 09:30, 09:31, 09:32
    one = one.filter(pl.col("bar_start_ns") != start + M)  # 09:31 had no trades
    two = br.bars_2m_from_1m(one)
    assert two["bar_start_ns"].to_list() == [start, start + 2 * M]
    assert two["bar_end_ns"].to_list() == [start + 2 * M, start + 4 * M]  # usable only at the 2-min close
    assert two.row(0, named=True)["high"] == 10 and two.row(0, named=True)["close"] == 9
    assert two["buy_volume"].null_count() == 2  # unknown at T0 stays unknown


def test_bars_from_ohlcv_1m():
    ohlcv = pl.DataFrame({"ts_event": [W.rth_open_ns, W.rth_open_ns, W.rth_open_ns + M], "instrument_id": [7, 7, 7],
                          "open": [1.0, 1.0, 2.0], "high": [2.0, 2.0, 3.0], "low": [0.5, 0.5, 1.5],
                          "close": [1.5, 1.5, 2.5], "volume": [10, 10, 20]}).with_columns(pl.col("volume").cast(pl.UInt64))
    b = br.bars_from_ohlcv_1m(ohlcv)
    assert b.height == 2 and b.schema == pl.Schema(br.BAR_SCHEMA)
    assert b["bar_end_ns"].to_list() == [W.rth_open_ns + M, W.rth_open_ns + 2 * M]
    assert b["vwap"].null_count() == 2 and b["trade_count"].null_count() == 2
    with pytest.raises(ValueError, match="several instruments"):
        br.bars_from_ohlcv_1m(ohlcv.with_columns(pl.Series("instrument_id", [7, 8, 7])))


# ---------------------------------------------------------------- ATR


ATR_BARS = [  # (high, low, close) → true range, computed by hand
    (102, 100, 101),  # 2 (first bar: H − L)
    (103, 101, 102),  # max(2, |103−101|, |101−101|) = 2
    (106, 104, 105),  # gap up: max(2, |106−102| = 4, 2) = 4
    (105, 101, 102),  # max(4, 0, 4) = 4
    (100, 98, 99),    # gap down: max(2, 2, |98−102| = 4) = 4
    (100, 99, 100),   # 1
    (101, 99, 100),   # 2
    (101, 100, 101),  # 1
    (104, 101, 103),  # 3
    (103, 102, 102),  # max(1, 0, 1) = 1
    (102, 100, 101),  # 2
    (103, 101, 102),  # 2
    (102, 101, 101),  # 1
    (101, 95, 96),    # 6
    (99, 97, 98),     # max(2, |99−96| = 3, 1) = 3
    (100, 99, 100),   # max(1, 2, 1) = 2
]
ATR_TR = [2, 2, 4, 4, 4, 1, 2, 1, 3, 1, 2, 2, 1, 6, 3, 2]


def test_true_range_and_atr_by_hand():
    b = bars_1m(W.premarket_start_ns, ATR_BARS)
    assert br.true_range(b).tolist() == ATR_TR
    a = br.atr(b)
    assert a.null_count() == 13  # null until 14 true ranges exist
    # sum(TR[0:14]) = 35 → 2.5; then drop 2 add 3 → 36/14; then drop 2 add 2 → 36/14
    assert a[13] == pytest.approx(35 / 14) and a[14] == pytest.approx(36 / 14) and a[15] == pytest.approx(36 / 14)


def test_value_asof_reads_only_closed_bars():
    b = bars_1m(W.premarket_start_ns, ATR_BARS)
    b = b.with_columns(br.atr(b))
    end13 = W.premarket_start_ns + 14 * M  # bar 13 closes here
    got = br.value_asof(b, "atr", [end13 - 1, end13, end13 + M - 1, end13 + M, W.premarket_start_ns])
    assert got[0] is None and got[4] is None
    assert got[1] == pytest.approx(2.5) and got[2] == pytest.approx(2.5) and got[3] == pytest.approx(36 / 14)


def test_atr_trailing_buffer_needs_period_plus_one_bars():
    rng = np.random.default_rng(3)
    b = br.bars_from_trades(random_trades(rng, W.premarket_start_ns, W.rth_open_ns, 3000), 60)
    full = br.atr(b)
    tail = b.tail(15)  # bars i−14 … i
    assert br.atr(tail)[-1] == full[-1]  # bit-identical
    assert br.trailing_mean(np.arange(200.0) * 0.1, 90)[-1] == br.trailing_mean(np.arange(110.0, 200.0) * 0.1, 90)[-1]


# ---------------------------------------------------------------- static levels


def test_pm_and_or_levels_on_a_constructed_day():
    start = et_to_ns(SESSION, dt.time(3, 55))
    n = int((et_to_ns(SESSION, dt.time(9, 50)) - start) // M)
    hlc = [(5010.0, 5000.0, 5005.0)] * n
    b = bars_1m(start, hlc)
    at = lambda h, m: et_to_ns(SESSION, dt.time(h, m))  # noqa: E731
    special = {at(3, 59): (6000.0, 5000.0), at(4, 0): (5010.0, 4990.0), at(9, 29): (5020.0, 5000.0),
               at(9, 30): (5010.0, 4995.0), at(9, 44): (5015.0, 5000.0), at(9, 45): (5100.0, 4000.0)}
    b = b.with_columns(
        pl.col("bar_start_ns").replace_strict({k: v[0] for k, v in special.items()}, default=pl.col("high"), return_dtype=pl.Float64).alias("high"),
        pl.col("bar_start_ns").replace_strict({k: v[1] for k, v in special.items()}, default=pl.col("low"), return_dtype=pl.Float64).alias("low"),
    )
    levels = lv.static_levels(b, SESSION)
    got = {r["level_kind"]: (r["price"], r["known_at_ns"]) for r in levels.iter_rows(named=True)}
    assert got == {
        "PM_HIGH": (5020.0, W.rth_open_ns), "PM_LOW": (4990.0, W.rth_open_ns),
        "OR_HIGH": (5015.0, W.opening_range_end_ns), "OR_LOW": (4995.0, W.opening_range_end_ns),
    }
    # No premarket data → PM levels absent (no row), OR still there.
    rth_only = lv.static_levels(b.filter(pl.col("bar_start_ns") >= W.rth_open_ns), SESSION)
    assert sorted(rth_only["level_kind"].to_list()) == ["OR_HIGH", "OR_LOW"]
    assert lv.static_levels(b.head(0), SESSION).height == 0


# ---------------------------------------------------------------- dynamic levels


def bars_2m(start_ns, end_ns, closes_fn, skip=lambda s: False):
    starts = np.arange(start_ns, end_ns, 2 * M, dtype=np.int64)
    starts = np.array([s for s in starts if not skip(s)], dtype=np.int64)
    close = closes_fn(starts)
    return pl.DataFrame({"bar_start_ns": starts, "bar_end_ns": starts + 2 * M, "open": close, "high": close + 1,
                         "low": close - 1, "close": close, "volume": np.ones(len(starts), dtype=np.uint64)})


def halt(s):  # the 17:00–18:00 ET maintenance halt of the previous session: no bars (gap)
    return et_to_ns(SESSION, dt.time(17, 0), -1) <= s < et_to_ns(SESSION, dt.time(18, 0), -1)


def test_sma_ema_with_previous_session_warmup_hand_checked():
    warm = lv.default_warmup_start_ns(SESSION)
    assert warm == session_window(dt.date(2024, 3, 11)).globex_open_ns == et_to_ns(SESSION, dt.time(18, 0), -2)
    end = W.analysis_end_ns
    b = bars_2m(warm - 60 * M, end, lambda s: np.zeros(len(s)), skip=halt)
    seq = (b["bar_start_ns"] >= warm).to_numpy()
    idx = np.cumsum(seq) - 1  # position in the warm-up sequence
    close = np.where(seq, 4000.0 + 0.25 * idx, 1e6)  # bars before the warm-up start are junk: must be ignored
    b = b.with_columns(pl.Series("close", close))
    dyn = lv.dynamic_levels(b, SESSION)
    assert set(dyn["level_kind"]) == {"SMA_90", "EMA_20"}
    assert dyn["known_at_ns"].min() >= W.globex_open_ns and dyn["known_at_ns"].max() <= W.close_ns
    known = dict(zip(b["bar_end_ns"].to_list(), close.tolist()))
    for kind, lag in (("SMA_90", 0.25 * 44.5), ("EMA_20", 0.25 * 9.5)):
        # On a linear close sequence the SMA_90 lags by 44.5 steps; the SMA-seeded EMA_20 by 9.5
        # steps exactly: seed mean(c_0..c_19) = c_19 − 9.5·0.25, and c_i − e_{i−1} = 10.5 steps
        # so each step adds α·10.5 = 1 step.
        rows = dyn.filter(pl.col("level_kind") == kind)
        expected = np.array([known[k] - lag for k in rows["known_at_ns"].to_list()])
        np.testing.assert_allclose(rows["price"].to_numpy(), expected, rtol=0, atol=1e-9)
    # Levels at 09:30 come from the 2-min bar that closed at 09:30.
    at_open = lv.levels_asof(dyn, [W.rth_open_ns])
    assert at_open.filter(pl.col("level_kind") == "SMA_90")["level_price"][0] == pytest.approx(known[W.rth_open_ns] - 0.25 * 44.5)


def test_ema_seed_by_hand_and_against_recursive_loop():
    e = lv.ema_seeded(np.arange(1.0, 26.0), 20)
    assert np.isnan(e[:19]).all()
    assert e[19] == 10.5 and e[20] == pytest.approx(11.5) and e[21] == pytest.approx(12.5)
    rng = np.random.default_rng(0)
    closes = 5000 + np.cumsum(rng.normal(0, 1, 300))
    alpha = 2 / 21
    ref = [float(np.mean(closes[:20]))]
    for c in closes[20:]:
        ref.append(alpha * c + (1 - alpha) * ref[-1])
    np.testing.assert_allclose(lv.ema_seeded(closes, 20)[19:], ref, rtol=1e-13)


def test_dynamic_levels_trailing_buffer_rule():
    """Bars before the warm-up start never matter; SMA_90 depends on the last 90 closes only."""
    warm = lv.default_warmup_start_ns(SESSION)
    rng = np.random.default_rng(5)
    b = bars_2m(warm - 300 * M, W.analysis_end_ns, lambda s: 5000 + np.cumsum(rng.normal(0, 1, len(s))), skip=halt)
    full = lv.dynamic_levels(b, SESSION)
    trimmed = lv.dynamic_levels(b.filter(pl.col("bar_start_ns") >= warm), SESSION)
    assert full.equals(trimmed)
    # SMA_90 at t from only the last 90 bars (any earlier warm-up start) is bit-identical.
    t = W.rth_open_ns + 60 * M
    last90 = b.filter(pl.col("bar_end_ns") <= t).tail(90)
    short = lv.dynamic_levels(last90, SESSION, warmup_start_ns=int(last90["bar_start_ns"][0]))
    sma = lambda f: lv.levels_asof(f.filter(pl.col("level_kind") == "SMA_90"), [t])["level_price"][0]  # noqa: E731
    assert sma(short) == sma(full)


# ---------------------------------------------------------------- levels as of t, confluence


def test_levels_asof_static_and_dynamic():
    levels = pl.DataFrame({
        "level_kind": ["OR_HIGH", "SMA_90", "SMA_90", "SMA_90"],
        "price": [5010.0, 4990.0, 4991.0, 4992.0],
        "known_at_ns": [100, 50, 100, 150],
    })
    got = lv.levels_asof(levels, [49, 50, 99, 100, 149, 1000])
    rows = {(r["t_ns"], r["level_kind"]): r["level_price"] for r in got.iter_rows(named=True)}
    assert rows == {
        (50, "SMA_90"): 4990.0, (99, "SMA_90"): 4990.0,
        (100, "OR_HIGH"): 5010.0, (100, "SMA_90"): 4991.0, (149, "OR_HIGH"): 5010.0, (149, "SMA_90"): 4991.0,
        (1000, "OR_HIGH"): 5010.0, (1000, "SMA_90"): 4992.0,
    }


def test_level_stacking_counts_and_nearest_distance():
    at = pl.DataFrame({
        "t_ns": [1] * 5 + [2],
        "level_kind": ["PM_HIGH", "OR_HIGH", "SMA_90", "EMA_20", "PM_LOW", "PM_HIGH"],
        "level_price": [100.0, 101.5, 104.0, 110.0, 125.0, 100.0],
    })
    got = lv.level_stacking(at)
    counts = {(r["t_ns"], r["level_kind"]): (r["level_stacking_2pt"], r["level_stacking_5pt"], r["level_stacking_10pt"])
              for r in got.iter_rows(named=True)}
    # distances: 100–101.5 = 1.5, 100–104 = 4, 100–110 = 10 (inclusive), 101.5–104 = 2.5, 101.5–110 = 8.5,
    # 104–110 = 6, 125 is ≥ 15 from all; at t = 2 the level is alone.
    assert counts == {
        (1, "PM_HIGH"): (1, 2, 3), (1, "OR_HIGH"): (1, 2, 3), (1, "SMA_90"): (0, 2, 3),
        (1, "EMA_20"): (0, 0, 3), (1, "PM_LOW"): (0, 0, 0), (2, "PM_HIGH"): (0, 0, 0),
    }
    dist = lv.dist_to_other_levels_atr(at.with_columns(pl.Series("atr", [2.0, 2.0, 2.0, 2.0, 2.0, 2.0])))
    d = dict(zip(zip(dist["t_ns"], dist["level_kind"]), dist["dist_to_other_levels_atr"]))
    assert d[(1, "PM_HIGH")] == 0.75 and d[(1, "SMA_90")] == 1.25 and d[(1, "PM_LOW")] == 7.5 and d[(2, "PM_HIGH")] is None
    zero = lv.dist_to_other_levels_atr(at.with_columns(pl.lit(0.0).alias("atr")))
    assert zero["dist_to_other_levels_atr"].null_count() == 6  # zero ATR → null, not inf


# ---------------------------------------------------------------- causality


def context_at(tr, t):
    """Everything this module family yields at time t, from raw trades."""
    b10, b1 = br.bars_from_trades(tr, 10), br.bars_from_trades(tr, 60)
    b2 = br.bars_2m_from_1m(b1)
    b1 = b1.with_columns(br.atr(b1))
    levels = pl.concat([lv.static_levels(b1, SESSION), lv.dynamic_levels(b2, SESSION)])
    at = lv.levels_asof(levels, [t]).with_columns(pl.lit(br.value_asof(b1, "atr", [t])[0], pl.Float64).alias("atr"))
    at = lv.dist_to_other_levels_atr(lv.level_stacking(at))
    closed = [x.filter(pl.col("bar_end_ns") <= t) for x in (b10, b1, b2)]
    return closed, at


@pytest.mark.parametrize("seed", range(4))
def test_causality_perturbing_events_after_t_changes_nothing_at_t(seed):
    rng = np.random.default_rng(seed)
    start = session_window(dt.date(2024, 3, 11)).analysis_end_ns  # previous day, for warm-up
    tr = random_trades(rng, start, W.analysis_end_ns, 20_000)
    for t in (W.rth_open_ns, W.opening_range_end_ns - 1, W.opening_range_end_ns, W.rth_open_ns + 45 * M + 17 * S,
              int(rng.integers(W.rth_open_ns, W.analysis_end_ns))):
        closed, at = context_at(tr, t)
        closed2, at2 = context_at(perturb_after(tr, t, rng), t)
        for a, b in zip(closed, closed2):
            assert a.equals(b)
        assert at.height > 0 and at.equals(at2)


def test_open_bar_does_not_leak():
    """A trade after t inside the bar that is still open at t changes that bar, not the value at t."""
    t = W.rth_open_ns + 30 * S
    tr = trades([(W.rth_open_ns - 5 * S, 100.0, 1, 1), (t - S, 101.0, 1, 1)])
    later = pl.concat([tr, trades([(t + S, 200.0, 1, 1)])])
    b, b_later = br.bars_from_trades(tr, 60), br.bars_from_trades(later, 60)
    assert b["close"][-1] != b_later["close"][-1]  # the open bar differs …
    assert br.value_asof(b, "close", [t])[0] == br.value_asof(b_later, "close", [t])[0] == 100.0  # … but is invisible
