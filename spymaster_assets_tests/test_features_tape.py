"""Tape: aggressor volumes/imbalance, near-level filter, velocity, sweeps, causality."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from spymaster_assets.lib.dbn_decode import aggressor_sign
from spymaster_assets.lib.features import tape
from spymaster_assets.lib.features.tape import detect_sweeps, tape_features, tape_level_features
from spymaster_assets_tests.test_features_order_flow import (
    CUTS,
    NS,
    T0,
    assert_rows_equal_upto,
    corrupt_after,
    drop_before,
    grid,
    synthetic_queries,
    synthetic_trades,
)

MS = 1_000_000


def trades_frame(rows) -> pl.DataFrame:
    """rows: (t in ns offsets from T0, price, size, side letter) — aggressor from the side."""
    side = np.array([r[3] for r in rows], dtype="S1")
    return pl.DataFrame(
        {
            "ts_event": [T0 + r[0] for r in rows],
            "price": [float(r[1]) for r in rows],
            "size": [r[2] for r in rows],
            "side": [r[3] for r in rows],
            "aggressor": aggressor_sign(side),
        },
        schema={"ts_event": pl.Int64, "price": pl.Float64, "size": pl.UInt32, "side": pl.Utf8, "aggressor": pl.Int8},
    )


def as_book(trades: pl.DataFrame) -> pl.DataFrame:
    """Trade prices as a stand-in top of book, to place synthetic levels near the tape."""
    return trades.select("ts_event", bid_px_00=pl.col("price"), ask_px_00=pl.col("price"))


def queries_at(t_ns, levels, signs) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "t_ns": [t_ns] * len(levels),
            "level_kind": [f"L{i}" for i in range(len(levels))],
            "level_price": levels,
            "dir_sign": signs,
        },
        schema={"t_ns": pl.Int64, "level_kind": pl.Utf8, "level_price": pl.Float64, "dir_sign": pl.Int8},
    )


# ---------------------------------------------------------------------------------------------
# volumes and imbalance


def test_aggressor_convention_is_pinned():
    # Databento side 'B' = buyer-initiated (+1), 'A' = seller-initiated (−1), 'N' unknown (0)
    assert aggressor_sign(np.array([b"B", b"A", b"N"])).tolist() == [1, -1, 0]
    tr = trades_frame([(1 * NS, 100, 7, "B"), (2 * NS, 100, 3, "A")])
    out = tape_features(tr, [T0 + 5 * NS], windows_s=(30,))
    assert (out["buy_vol_30s"][0], out["sell_vol_30s"][0]) == (7, 3)


def test_volumes_imbalance_and_window_edges():
    tr = trades_frame(
        [
            (0 * NS, 100.0, 5, "B"),  # exactly t − 30 for t = 30 s → excluded there
            (10 * NS, 100.25, 3, "A"),
            (20 * NS, 100.0, 4, "N"),  # unknown aggressor: in neither side
            (30 * NS, 100.5, 2, "B"),  # exactly t → included
            (31 * NS, 100.5, 9, "B"),  # after t
        ]
    )
    out = tape_features(tr, [T0 + 30 * NS, T0 + 100 * NS, T0 + 60 * NS], windows_s=(30, 60))
    assert out["buy_vol_30s"].to_list() == [2, 0, 9]
    assert out["sell_vol_30s"].to_list() == [3, 0, 0]
    assert out["tape_imbalance_30s"].to_list() == [pytest.approx(-1 / 5), None, 1.0]
    # 60 s at t = 30: (−30, 30] includes ts 0 → buy 5 + 2, sell 3 → (7 − 3)/10;
    # at t = 60: (0, 60] drops the print at exactly 0 s → buy 2 + 9
    assert out["buy_vol_60s"].to_list() == [7, 0, 11]
    assert out["tape_imbalance_60s"][0] == pytest.approx(0.4)
    only_unknown = tape_features(trades_frame([(1 * NS, 100, 4, "N")]), [T0 + 2 * NS], windows_s=(30,))
    assert only_unknown.row(0, named=True) | {"t_ns": 0} == {
        "t_ns": 0,
        "buy_vol_30s": 0,
        "sell_vol_30s": 0,
        "tape_imbalance_30s": None,
        "trade_velocity_60s": None,
        "sweep_count_60s": 0,
        "sweep_buy_count_60s": 0,
        "sweep_sell_count_60s": 0,
    }


def test_unsorted_feed_order_is_sorted_by_ts_event():
    tr = trades_frame([(20 * NS, 100.0, 1, "B"), (10 * NS, 100.0, 2, "A"), (40 * NS, 100.0, 4, "B")])
    out = tape_features(tr, [T0 + 30 * NS], windows_s=(30,))
    assert (out["buy_vol_30s"][0], out["sell_vol_30s"][0]) == (1, 2)


def test_default_columns_match_registry():
    tr = trades_frame([(1 * NS, 100, 1, "B")])
    cols = tape_features(tr, [T0]).columns[1:] + tape_level_features(tr, queries_at(T0, [100.0], [1])).columns[4:]
    assert cols == [f.name for f in tape.FEATURES]
    assert all(f.family == "tape" and f.tier == "T1" for f in tape.FEATURES)


# ---------------------------------------------------------------------------------------------
# near level


def test_imbalance_toward_counts_every_print_and_takes_the_approach_sign():
    """tape_imbalance_toward_120s: all prints of the last 120 s, wherever they traded, signed by
    the approach — buyers dominate (buy 10 + 6, sell 4), so + for UP, − for DOWN."""
    tr = trades_frame(
        [
            (-130 * NS, 100.0, 50, "A"),  # before the window (t − 120 s, t]: ignored
            (-120 * NS, 100.0, 50, "A"),  # exactly t − 120 s: outside (open left edge)
            (1 * NS, 100.0, 10, "B"),
            (2 * NS, 150.0, 6, "B"),  # far from any level: still counted
            (3 * NS, 100.0, 4, "A"),
            (4 * NS, 100.0, 9, "N"),  # unknown aggressor: neither side
        ]
    )
    out = tape_level_features(tr, queries_at(T0 + 10 * NS, [100.0, 100.0, 300.0], [1, -1, -1]))
    assert out["tape_imbalance_toward_120s"].to_list() == [
        pytest.approx(12 / 20), pytest.approx(-12 / 20), pytest.approx(-12 / 20)]
    quiet = tape_level_features(tr, queries_at(T0 + 400 * NS, [100.0], [1]))
    assert quiet["tape_imbalance_toward_120s"].to_list() == [None]  # no aggression: the registry's 0
    assert tape.NO_AGGRESSION.means == 0.0


def test_near_level_filter_and_toward_sign():
    tr = trades_frame(
        [
            (1 * NS, 100.0, 10, "B"),
            (2 * NS, 102.0, 4, "A"),  # exactly L + 2 for L = 100 → inside (edges inclusive)
            (3 * NS, 102.25, 7, "A"),  # outside for L = 100
            (4 * NS, 97.75, 6, "A"),  # outside for L = 100, inside for L = 98
            (5 * NS, 101.0, 1, "N"),
        ]
    )
    q = queries_at(T0 + 10 * NS, [100.0, 100.0, 98.0, 200.0, None], [1, -1, -1, 1, 1])
    out = tape_level_features(tr, q, band_pt=2.0, window_s=60)
    assert out["tape_near_buy_vol_60s"].to_list() == [10, 10, 10, 0, None]
    assert out["tape_near_sell_vol_60s"].to_list() == [4, 4, 6, 0, None]
    # imbalance (10 − 4)/14 = 3/7, toward: × dir_sign; L = 98 DOWN: (10 − 6)/16 · (−1)
    assert out["tape_near_imbalance_toward_60s"].to_list() == [
        pytest.approx(3 / 7),
        pytest.approx(-3 / 7),
        pytest.approx(-0.25),
        None,
        None,
    ]


def test_near_level_equals_brute_force():
    tr = synthetic_trades(3000, seed=7)
    q = synthetic_queries(grid()[::5], seed=7, book=as_book(tr))
    out = tape_level_features(tr, q, band_pt=1.0, window_s=60)
    ts, px = tr["ts_event"].to_numpy(), tr["price"].to_numpy()
    size, agg = tr["size"].to_numpy().astype(np.int64), tr["aggressor"].to_numpy()
    for i, (t, _, lvl, _) in enumerate(q.iter_rows()):
        m = (ts > t - 60 * NS) & (ts <= t) & (px >= lvl - 1) & (px <= lvl + 1)
        assert out["tape_near_buy_vol_60s"][i] == size[m & (agg > 0)].sum()
        assert out["tape_near_sell_vol_60s"][i] == size[m & (agg < 0)].sum()


# ---------------------------------------------------------------------------------------------
# velocity


def test_trade_velocity_least_squares_and_nulls():
    t = T0 + 60 * NS
    line = trades_frame([(40 * NS, 100.0, 1, "B"), (50 * NS, 100.5, 1, "A"), (60 * NS, 101.0, 1, "B")])
    out = tape_features(line, [t], windows_s=(30,))
    assert out["trade_velocity_60s"][0] == pytest.approx(0.05)  # 1 pt over 20 s
    # OLS on (0,0), (1,1), (2,0), (3,3) s/pt: x̄ = 1.5, ȳ = 1,
    # Σ(x−x̄)(y−ȳ) = 1.5 + 0 − 0.5 + 3 = 4, Σ(x−x̄)² = 5 → slope 0.8
    pts = trades_frame([((10 + x) * NS, 100 + y, 1, "B") for x, y in [(0, 0), (1, 1), (2, 0), (3, 3)]])
    assert tape_features(pts, [T0 + 13 * NS])["trade_velocity_60s"][0] == pytest.approx(0.8)
    two = line.slice(1)
    assert tape_features(two, [t])["trade_velocity_60s"][0] is None  # < 3 prints
    same_ts = trades_frame([(50 * NS, p, 1, "B") for p in (100.0, 100.25, 100.5)])
    assert tape_features(same_ts, [t])["trade_velocity_60s"][0] is None  # no time spread
    q = queries_at(t, [105.0, 95.0], [1, -1])
    assert tape_level_features(line, q)["trade_velocity_toward_60s"].to_list() == [
        pytest.approx(0.05),
        pytest.approx(-0.05),
    ]


# ---------------------------------------------------------------------------------------------
# sweeps


def _sweeps(rows, **kw) -> list[tuple[int, int]]:
    """(qualification offset in ms from T0, aggressor) of each detected sweep."""
    out = detect_sweeps(trades_frame(rows), **kw)
    return [((ts - T0) // MS, a) for ts, a in zip(out["ts_event"], out["aggressor"])]


def test_sweep_same_timestamp_three_prices():
    assert _sweeps([(0, 100.0, 1, "B"), (0, 100.25, 1, "B"), (0, 100.5, 1, "B")]) == [(0, 1)]


def test_sweep_within_100ms_but_not_at_100ms():
    assert _sweeps([(0, 100.0, 1, "A"), (50 * MS, 99.75, 1, "A"), (99 * MS, 99.5, 1, "A")]) == [(99, -1)]
    # the third print is 100 ms after the run's first → next 100 ms slice → no sweep
    assert _sweeps([(0, 100.0, 1, "A"), (50 * MS, 99.75, 1, "A"), (100 * MS, 99.5, 1, "A")]) == []


def test_sweep_interrupted_by_other_side_or_unknown():
    assert _sweeps([(0, 100.0, 1, "B"), (1 * MS, 100.25, 1, "A"), (2 * MS, 100.5, 1, "B")]) == []
    assert _sweeps([(0, 100.0, 1, "B"), (1 * MS, 100.25, 1, "N"), (2 * MS, 100.5, 1, "B")]) == []


def test_sweep_needs_distinct_prices_and_counts_once():
    assert _sweeps([(i * MS, 100.0 + 0.25 * (i % 2), 1, "B") for i in range(6)]) == []  # 2 prices only
    five = [(i * MS, 100.0 + 0.25 * i, 1, "B") for i in range(5)]
    assert _sweeps(five) == [(2, 1)]  # stamped at the 3rd distinct price, counted once
    assert _sweeps(five, min_prices=4) == [(3, 1)]
    # repeated prices do not count twice: 100, 100, 100.25, 100, 100.5 → qualifies at 4 ms
    rep = [(i * MS, p, 1, "B") for i, p in enumerate([100.0, 100.0, 100.25, 100.0, 100.5])]
    assert _sweeps(rep) == [(4, 1)]


def test_sweep_slices_are_measured_from_the_run_start():
    # run starts at 0 ms; slice 1 = [100, 200) ms holds 120/130/140 ms at three prices → sweep
    rows = [(0, 100.0, 1, "B"), (120 * MS, 100.25, 1, "B"), (130 * MS, 100.5, 1, "B"), (140 * MS, 100.75, 1, "B")]
    assert _sweeps(rows) == [(140, 1)]
    # 90 ms | 110 ms, 150 ms fall in slices 0 and 1 (two prices each) → no sweep, although
    # 90–150 ms is < 100 ms: slices are fixed by the run's first print (documented choice)
    rows = [(0, 100.0, 1, "B"), (90 * MS, 100.25, 1, "B"), (110 * MS, 100.5, 1, "B"), (150 * MS, 100.75, 1, "B")]
    assert _sweeps(rows) == []
    # a new run (after an opposite print) restarts the slicing
    rows = [(0, 100.0, 1, "B"), (90 * MS, 99.0, 1, "A")] + [((95 + i) * MS, 100.25 + 0.25 * i, 1, "B") for i in range(3)]
    assert _sweeps(rows) == [(97, 1)]


def test_sweep_counts_in_window():
    rows = [(0, 100.0 + 0.25 * i, 1, "B") for i in range(3)]  # buy sweep qualifying at 0 s
    rows += [(10 * NS, 100.0 - 0.25 * i, 1, "A") for i in range(3)]  # sell sweep at 10 s
    rows += [(60 * NS, 101.0 + 0.25 * i, 1, "B") for i in range(3)]  # buy sweep at 60 s
    tr = trades_frame(rows)
    out = tape_features(tr, [T0 + s * NS for s in (0, 59, 60, 69, 70)])
    # window (t − 60, t]: the 0 s sweep leaves at t = 60, the 10 s one at t = 70
    assert out["sweep_count_60s"].to_list() == [1, 2, 2, 2, 1]
    assert out["sweep_buy_count_60s"].to_list() == [1, 1, 1, 1, 1]
    assert out["sweep_sell_count_60s"].to_list() == [0, 1, 1, 1, 0]
    q = queries_at(T0 + 60 * NS, [200.0, 50.0], [1, -1])
    assert tape_level_features(tr, q)["sweep_toward_count_60s"].to_list() == [1, 1]


# ---------------------------------------------------------------------------------------------
# causality and trailing buffer


def _all_tape(trades: pl.DataFrame, queries: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    return tape_features(trades, np.unique(queries["t_ns"].to_numpy())), tape_level_features(trades, queries)


@pytest.mark.parametrize("seed", [0, 1])
def test_causality_future_garbage_never_changes_past_rows(seed):
    trades = synthetic_trades(5000, seed=seed)
    queries = synthetic_queries(grid(), seed=seed, book=as_book(trades))
    market, level = _all_tape(trades, queries)
    assert market["sweep_count_60s"].sum() > 10 and market["trade_velocity_60s"].drop_nulls().len() > 100
    for j, cut in enumerate(CUTS):
        m2, l2 = _all_tape(corrupt_after(trades, cut, seed=200 + j), queries)
        assert_rows_equal_upto(market, m2, cut)
        assert_rows_equal_upto(level, l2, cut)


def test_trailing_buffer_reproduces_rows():
    trades = synthetic_trades(5000, seed=9)
    queries = synthetic_queries(grid(), seed=9, book=as_book(trades))
    market, level = _all_tape(trades, queries)
    max_window_s, margin_s = 120, 30
    for t in CUTS:
        buf = drop_before(trades, t - (max_window_s + margin_s) * NS)
        m2, l2 = _all_tape(buf, queries.filter(pl.col("t_ns") == t))
        assert market.filter(pl.col("t_ns") == t).equals(m2)
        assert level.filter(pl.col("t_ns") == t).equals(l2)


def test_empty_trades_give_zero_volumes_and_null_ratios():
    from spymaster_assets.lib.dbn_decode import FRAME_SCHEMAS

    tr = pl.DataFrame(schema=FRAME_SCHEMAS["trades"])
    out = tape_features(tr, [T0])
    assert out["buy_vol_60s"].to_list() == [0] and out["tape_imbalance_60s"].to_list() == [None]
    assert out["trade_velocity_60s"].to_list() == [None] and out["sweep_count_60s"].to_list() == [0]
    lvl = tape_level_features(tr, queries_at(T0, [100.0], [1]))
    assert lvl.row(0)[4:] == (0, 0, None, None, 0, None)
    assert detect_sweeps(tr).height == 0
