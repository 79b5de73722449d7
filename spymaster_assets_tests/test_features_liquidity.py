"""Liquidity: defending vs opposing side, depth changes, replenishment, wall, vacuum, latency."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from spymaster_assets.lib.features import liquidity
from spymaster_assets.lib.features.liquidity import defending_depth_at, liquidity_features, max_lookback_s
from spymaster_assets_tests.test_features_order_flow import (
    CUTS,
    NS,
    T0,
    assert_rows_equal_upto,
    book_frame,
    corrupt_after,
    drop_before,
    grid,
    synthetic_book,
    synthetic_queries,
)

L = 100.0


def series_book(changes: dict[float, int], end_s: int = 4000, side: str = "ask", level: float = L) -> pl.DataFrame:
    """One record per second 0..end_s; the `side` has one level at `level` whose size is the
    step function `changes` ({from_second: size}); the other side sits 10 pt away (outside
    any ±2 pt band). Extra records are inserted at fractional change times."""
    stamps = np.union1d(np.arange(end_s + 1, dtype=np.float64), np.array(sorted(changes), dtype=np.float64))
    keys = np.array(sorted(changes), dtype=np.float64)
    vals = np.array([changes[k] for k in sorted(changes)])
    size = vals[np.searchsorted(keys, stamps, side="right") - 1]
    n = len(stamps)
    other = "bid" if side == "ask" else "ask"
    cols = {"ts_event": T0 + np.round(stamps * NS).astype(np.int64)}
    cols[f"{side}_px_00"] = np.full(n, level)
    cols[f"{side}_sz_00"] = size.astype(np.uint32)
    cols[f"{other}_px_00"] = np.full(n, level - 10.0 if other == "bid" else level + 10.0)
    cols[f"{other}_sz_00"] = np.ones(n, np.uint32)
    for k in range(1, 10):
        for s in ("bid", "ask"):
            cols[f"{s}_px_{k:02d}"] = np.full(n, np.nan)
            cols[f"{s}_sz_{k:02d}"] = np.zeros(n, np.uint32)
    return pl.DataFrame(cols)


def q(times_s, level=L, sign=1) -> pl.DataFrame:
    times_s = list(times_s)
    return pl.DataFrame(
        {
            "t_ns": [T0 + int(round(s * NS)) for s in times_s],
            "level_kind": ["X"] * len(times_s),
            "level_price": [level] * len(times_s),
            "dir_sign": [sign] * len(times_s),
        },
        schema={"t_ns": pl.Int64, "level_kind": pl.Utf8, "level_price": pl.Float64, "dir_sign": pl.Int8},
    )


def col(frame: pl.DataFrame, name: str) -> list:
    return frame[name].to_list()


# ---------------------------------------------------------------------------------------------
# defending side


def test_defending_side_is_asks_for_up_and_bids_for_down():
    book = book_frame(
        [10, 20],
        bids=[[(99.75, 10), (99.5, 20), (99.0, 5), (97.0, 100)], [(99.75, 1)]],
        asks=[[(100.0, 7), (100.25, 8), (101.5, 9), (102.5, 50), (102.75, 1000)], [(100.0, 1)]],
    )
    level = 100.5  # band [98.5, 102.5], both edges inclusive
    queries = pl.concat([q([5, 10, 15], level, 1), q([15], level, -1)])
    out = liquidity_features(book, queries)
    # asks in band: 7 + 8 + 9 + 50 (102.75 out); bids in band: 10 + 20 + 5 (97.0 out)
    assert col(out, "defending_depth") == [None, 74.0, 74.0, 35.0]
    assert col(out, "opposing_depth") == [None, 35.0, 35.0, 74.0]
    # the record at exactly t is used; the one after t is not
    d, o = defending_depth_at(book, [T0 + 10 * NS, T0 + 19 * NS, T0 + 20 * NS], level, -1)
    assert d.tolist() == [35.0, 35.0, 1.0] and o.tolist() == [74.0, 74.0, 1.0]


def test_null_level_or_unknown_book_gives_nulls():
    book = series_book({0: 10}, end_s=100)
    queries = pl.concat([q([50]), q([50], level=None), q([-5])])
    out = liquidity_features(book, queries)
    for name in out.columns[4:]:
        assert out[name][1] is None and out[name][2] is None, name
    assert out["defending_depth"][0] == 10.0


def test_default_columns_match_registry():
    out = liquidity_features(series_book({0: 1}, end_s=10), q([5]))
    assert out.columns[4:] == [f.name for f in liquidity.FEATURES]
    assert all(f.family == "liquidity" and f.tier == "T2" and f.level_relative for f in liquidity.FEATURES)
    assert max_lookback_s() == 1811


# ---------------------------------------------------------------------------------------------
# changes, replenishment, wall


def test_depth_changes_and_wall_ratio():
    book = series_book({0: 100, 2000: 40})
    out = liquidity_features(book, q([2030, 2090]))
    assert col(out, "defending_depth") == [40.0, 40.0]
    # t = 2030: every look-back (1/2/3/5 min) lands before 2000 s → −60
    # t = 2090: 1 min back is 2030 s (40) → 0; 2 min back 1970 s (100) → −60
    assert col(out, "defending_depth_chg_1min") == [-60.0, 0.0]
    assert col(out, "defending_depth_chg_2min") == [-60.0, -60.0]
    assert col(out, "defending_depth_chg_5min") == [-60.0, -60.0]
    # wall at 2030: 10-s samples 2030, 2020, …, 240 (180 of them): 4 at 40, 176 at 100
    assert out["wall_ratio_30min"][0] == pytest.approx(40 / ((4 * 40 + 176 * 100) / 180))
    # at 2090: 10 samples ≥ 2000 s at 40, 170 at 100
    assert out["wall_ratio_30min"][1] == pytest.approx(40 / ((10 * 40 + 170 * 100) / 180))


def test_wall_mean_skips_unknown_samples_and_is_null_on_zero_mean():
    book = series_book({0: 10, 50: 30}, end_s=100)
    out = liquidity_features(book, q([100]))
    # samples 100, 90, …, 0 are known (11): 6 at 30 (50..100), 5 at 10
    assert out["wall_ratio_30min"][0] == pytest.approx(30 / ((6 * 30 + 5 * 10) / 11))
    empty = liquidity_features(series_book({0: 0}, end_s=100), q([100]))
    assert empty["wall_ratio_30min"][0] is None and empty["defending_depth"][0] == 0.0
    assert empty["vacuum_duration_s"][0] is None


def test_replenishment_ratio_on_one_second_samples():
    book = series_book({0: 50, 100: 30, 110: 45, 130: 60, 140: 55, 200.2: 20, 200.6: 55})
    out = liquidity_features(book, q([90, 150, 260]))
    # t = 150: increments over (30, 150]: −20, +15, +15, −5 → 30 / 25
    assert out["replenish_ratio_2min"].to_list() == [None, pytest.approx(1.2), None]
    assert out["replenish_share_2min"].to_list() == [None, pytest.approx(30 / 55), None]
    # t = 90: flat → both null; t = 260: the 200.2→200.6 s flicker is between two 1-s
    # samples, so invisible; there is no sampled move in (140, 260] → null


def test_replenishment_ratio_without_decrease_is_null_but_share_is_one():
    out = liquidity_features(series_book({0: 10, 100: 30}), q([150]))
    assert out["replenish_ratio_2min"][0] is None
    assert out["replenish_share_2min"][0] == 1.0


# ---------------------------------------------------------------------------------------------
# vacuum


def test_vacuum_duration():
    book = series_book({0: 100, 1800: 10, 1900: 100})
    out = liquidity_features(book, q([1795, 1800, 1830, 1900]))
    # threshold at 1830: 0.25 × mean(4 samples at 10, 176 at 100) = 0.25 × 98 = 24.5;
    # below since the 1800 s sample → 30 s; at 1800 the run has just started → 0
    assert col(out, "vacuum_duration_s") == [0.0, 0.0, 30.0, 0.0]
    capped = liquidity_features(book, q([1830]), vacuum_max_s=20)
    assert capped["vacuum_duration_s"][0] == 20.0


# ---------------------------------------------------------------------------------------------
# depletion and replenishment latency


def test_latency_recovered():
    book = series_book({0: 100, 1000: 30, 1015: 85})
    out = liquidity_features(book, q([999, 1010, 1030]))
    assert col(out, "replenish_latency_s") == [None, 10.0, 15.0]
    assert col(out, "depletion_age_s") == [None, 10.0, 30.0]
    # at 1010 the recovery (1015) has not happened yet: elapsed so far, still replenishing
    assert col(out, "replenishing_now") == [False, True, False]


def test_latency_not_recovered_below_80_percent():
    out = liquidity_features(series_book({0: 100, 1000: 30, 1015: 79}), q([1030]))
    assert out.row(0, named=True)["replenish_latency_s"] == 30.0
    assert out.row(0, named=True)["replenishing_now"] is True


def test_slow_decline_is_not_a_depletion():
    # 100 → 70 → 45 in steps 20 s apart: never ≥ 50 % below the max of the previous 10 s
    out = liquidity_features(series_book({0: 100, 1000: 70, 1020: 45}), q([1030]))
    assert out["replenish_latency_s"][0] is None
    assert out["replenishing_now"][0] is False
    # the same 100 → 45 inside 10 s is one
    out = liquidity_features(series_book({0: 100, 1000: 70, 1008: 45}), q([1030]))
    assert out["depletion_age_s"][0] == 22.0 and out["replenishing_now"][0] is True


def test_latency_uses_most_recent_depletion_and_lookback():
    book = series_book({0: 100, 500: 20, 505: 100, 1000: 10, 1040: 100})
    out = liquidity_features(book, q([600, 1100]))
    assert col(out, "replenish_latency_s") == [5.0, 40.0]
    assert col(out, "depletion_age_s") == [100.0, 100.0]
    short = liquidity_features(book, q([1100]), latency_lookback_s=60)
    assert short["replenish_latency_s"][0] is None and short["replenishing_now"][0] is False


def test_down_level_uses_bids():
    book = series_book({0: 100, 1000: 30, 1015: 85}, side="bid")
    out = liquidity_features(book, pl.concat([q([1030], sign=-1), q([1030], sign=1)]))
    assert col(out, "defending_depth") == [85.0, 0.0]
    assert col(out, "opposing_depth") == [0.0, 85.0]
    assert col(out, "replenish_latency_s") == [15.0, None]


# ---------------------------------------------------------------------------------------------
# against a direct implementation, causality, trailing buffer


def _regime_book(n: int, seed: int) -> pl.DataFrame:
    """Synthetic book whose sizes switch between regimes (thin, normal, wall) so that
    depletions, vacuums and walls all occur."""
    book = synthetic_book(n, seed=seed)
    rng = np.random.default_rng(seed + 1000)
    factor = np.repeat(rng.choice([0.0, 0.1, 1.0, 4.0], size=n // 40 + 1), 40)[:n]
    return book.with_columns(
        [(pl.col(c).cast(pl.Float64) * factor).round().cast(pl.UInt32).alias(c) for c in book.columns if "_sz_" in c]
    )


def test_depth_features_equal_direct_asof_computation():
    book = _regime_book(4000, seed=21)
    queries = synthetic_queries(grid()[::3], seed=21, book=book)
    # a few queries off the whole-second phase exercise the grouping by t mod Δ
    odd = queries.head(8).with_columns(pl.col("t_ns") + NS // 2)
    queries = pl.concat([queries, odd])
    out = liquidity_features(book, queries)
    ts = book["ts_event"].to_numpy()
    mat = {
        side: (
            np.column_stack([book[f"{side}_px_{k:02d}"].to_numpy() for k in range(10)]),
            np.column_stack([book[f"{side}_sz_{k:02d}"].to_numpy().astype(float) for k in range(10)]),
        )
        for side in ("bid", "ask")
    }

    def depth(side, times, lvl):  # direct as-of on the raw matrices
        i = np.searchsorted(ts, times, side="right") - 1
        px, sz = mat[side][0][np.maximum(i, 0)], mat[side][1][np.maximum(i, 0)]
        with np.errstate(invalid="ignore"):
            d = np.where((px >= lvl - 2.0) & (px <= lvl + 2.0), sz, 0.0).sum(axis=1)
        return np.where(i >= 0, d, np.nan)

    for i, (t, _, lvl, s) in enumerate(queries.iter_rows()):
        defend, oppose = ("ask", "bid") if s > 0 else ("bid", "ask")
        lags = np.concatenate([[0, 180], 10 * np.arange(180)]) * NS
        d = depth(defend, t - lags, lvl)
        now = d[0]
        if np.isnan(now):
            assert out["defending_depth"][i] is None
            continue
        assert out["defending_depth"][i] == now
        assert out["opposing_depth"][i] == depth(oppose, np.array([t]), lvl)[0]
        chg = now - d[1]
        assert out["defending_depth_chg_3min"][i] == (None if np.isnan(chg) else chg)
        mean = np.nanmean(d[2:])
        expect = now / mean if mean > 0 else None
        assert out["wall_ratio_30min"][i] == (None if expect is None else pytest.approx(expect))


def _all_liquidity(book, queries):
    return liquidity_features(book, queries)


@pytest.mark.parametrize("seed", [0, 1])
def test_causality_future_garbage_never_changes_past_rows(seed):
    book = _regime_book(4000, seed=seed)
    queries = synthetic_queries(grid(), seed=seed, book=book)
    full = _all_liquidity(book, queries)
    assert full["replenish_latency_s"].drop_nulls().len() > 50
    assert (full["vacuum_duration_s"] > 0).sum() > 10
    assert full["replenishing_now"].sum() > 5
    for j, cut in enumerate(CUTS):
        assert_rows_equal_upto(full, _all_liquidity(corrupt_after(book, cut, seed=300 + j), queries), cut)


def test_trailing_buffer_reproduces_rows():
    book = _regime_book(4000, seed=7)
    queries = synthetic_queries(grid(), seed=7, book=book)
    full = _all_liquidity(book, queries)
    margin_s = 30
    for t in CUTS:
        buf = drop_before(book, t - int((max_lookback_s() + margin_s) * NS))
        assert full.filter(pl.col("t_ns") == t).equals(_all_liquidity(buf, queries.filter(pl.col("t_ns") == t)))


def test_empty_book_and_queries():
    from spymaster_assets.lib.dbn_decode import FRAME_SCHEMAS

    book = pl.DataFrame(schema=FRAME_SCHEMAS["mbp-10"])
    out = liquidity_features(book, q([5]))
    assert out.row(0)[4:] == (None,) * 13
    assert liquidity_features(series_book({0: 1}, end_s=5), q([5]).clear()).height == 0
