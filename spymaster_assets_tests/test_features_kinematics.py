"""Kinematics (one-sided polynomial fits) and approach features: exact paths, nulls, causality."""

import numpy as np
import polars as pl
import pytest

from spymaster_assets.lib.features import bars as br
from spymaster_assets.lib.features import kinematics as kin

S = 1_000_000_000
M = 60 * S
T0 = 1_700_000_040 * S  # a multiple of 60 s: minute 0 of the fixtures
WINDOWS = kin.KINEMATIC_WINDOWS_MIN


def series_from(fn, step_s, minutes=60):
    """Price path p(m), m = minutes since T0, sampled every step_s (points at their usable time)."""
    ts = T0 + np.arange(0, minutes * 60 + 1, step_s, dtype=np.int64) * S
    return pl.DataFrame({"ts_ns": ts, "price": fn((ts - T0) / M)})


def grid(start_min=25, end_min=60):
    return T0 + np.arange(start_min * 60, end_min * 60 + 1, 30, dtype=np.int64) * S


def quad(m):
    return 5000.0 + 0.5 * m + 0.1 * m * m


def test_quadratic_path_recovered_exactly_on_10s_samples():
    t = grid()
    out = kin.kinematics(series_from(quad, 10), t, sample_s=10)
    m = (t - T0) / M
    for w in WINDOWS:
        np.testing.assert_allclose(out[f"velocity_{w}min"].to_numpy(), 0.5 + 0.2 * m, atol=1e-8)
        np.testing.assert_allclose(out[f"acceleration_{w}min"].to_numpy(), 0.2, atol=1e-8)
    np.testing.assert_allclose(out["jerk_5min"].to_numpy(), 0.0, atol=1e-7)


def test_linear_path_has_zero_acceleration():
    out = kin.kinematics(series_from(lambda m: 4000.0 - 1.25 * m, 10), grid(), sample_s=10)
    for w in WINDOWS:
        np.testing.assert_allclose(out[f"velocity_{w}min"].to_numpy(), -1.25, atol=1e-9)
        np.testing.assert_allclose(out[f"acceleration_{w}min"].to_numpy(), 0.0, atol=1e-9)


def test_cubic_path_gives_jerk():
    out = kin.kinematics(series_from(lambda m: 5000.0 + 0.01 * m**3, 10), grid(), sample_s=10)
    np.testing.assert_allclose(out["jerk_5min"].to_numpy(), 0.06, atol=1e-7)


def test_tier_t0_one_minute_closes():
    """1-min closes usable at the minute: at t = mm:30 the fit ends at the last completed minute;
    the 1- and 2-min windows hold only 2–3 closes → null; 3 min and up are exact."""
    t = grid()
    out = kin.kinematics(series_from(quad, 60), t, sample_s=60)
    tau_m = np.floor((t - T0) / M)
    for w in (1, 2):
        assert out[f"velocity_{w}min"].null_count() == len(t)
    for w in (3, 5, 10, 20):
        np.testing.assert_allclose(out[f"velocity_{w}min"].to_numpy(), 0.5 + 0.2 * tau_m, atol=1e-8)
        np.testing.assert_allclose(out[f"acceleration_{w}min"].to_numpy(), 0.2, atol=1e-8)
    assert out["jerk_5min"].null_count() == 0  # 6 closes in [τ − 5 min, τ]


def test_fewer_than_four_points_is_null_and_partial_windows_fit_what_exists():
    ser = series_from(quad, 10, minutes=60)
    t = np.array([T0 - S, T0, T0 + 20 * S, T0 + 30 * S, T0 + 50 * S, T0 + 120 * S], dtype=np.int64)
    out = kin.kinematics(ser, t, sample_s=10)
    # samples available: 0, 1, 3, 4, 6, 13 (first point at T0)
    assert out["velocity_1min"].is_null().to_list() == [True, True, True, False, False, False]
    assert out["jerk_5min"].is_null().to_list() == [True, True, True, True, False, False]
    np.testing.assert_allclose(out["velocity_20min"].to_numpy()[3:], 0.5 + 0.2 * (t[3:] - T0) / M, atol=1e-8)


def test_fit_weights_match_polyfit():
    rng = np.random.default_rng(1)
    y = rng.normal(size=13)
    x = -np.arange(13) * (10 / 60)  # newest first, minutes
    c = np.polyfit(x, y, 2)
    assert kin.fit_weights(13, 2, 1, 10 / 60) @ y == pytest.approx(c[1])
    assert kin.fit_weights(13, 2, 2, 10 / 60) @ y == pytest.approx(2 * c[0])
    c3 = np.polyfit(x, y, 3)
    assert kin.fit_weights(13, 3, 3, 10 / 60) @ y == pytest.approx(6 * c3[0])


def test_toward_level_multiplies_by_dir_sign():
    t = grid(30, 31)
    out = kin.kinematics(series_from(lambda m: 5000.0 + 2.0 * m, 10), t)
    queries = pl.DataFrame({"t_ns": [t[0], t[0]], "level_kind": ["OR_HIGH", "PM_LOW"], "level_price": [5100.0, 4900.0],
                            "dir_sign": pl.Series([1, -1], dtype=pl.Int8)})
    toward = kin.kinematics_toward_level(out, queries)
    assert toward["velocity_5min"].to_list() == pytest.approx([2.0, -2.0])  # rising: toward the high, away from the low


def test_approach_features_by_hand():
    closes = [100, 100, 101, 100, 101, 102, 103, 104, 104.5, 105, 105.5, 106, 107]  # minutes 0..12 (usable at their ends)
    ser = pl.DataFrame({"ts_ns": T0 + M * np.arange(len(closes), dtype=np.int64), "price": np.array(closes, float)})
    t = T0 + 12 * M + 30 * S
    q = pl.DataFrame({"t_ns": [t, t, t], "level_kind": ["OR_HIGH", "PM_LOW", "SMA_90"], "level_price": [110.0, 90.0, 111.0],
                      "dir_sign": pl.Series([1, -1, 1], dtype=pl.Int8)})
    atr = pl.DataFrame({"t_ns": [t], "atr": [2.0]})
    out = kin.approach_features(ser, q, atr, sample_s=60)
    # p(12) − p(2) = 107 − 101 = 6 over 10 min; 9 consecutive rising closes (minute 3 fell)
    assert out["approach_velocity"].to_list() == pytest.approx([0.6, -0.6, 0.6])
    assert out["approach_distance_atr"].to_list() == pytest.approx([3.0, -3.0, 3.0])
    assert out["approach_bars"].to_list() == [9, 0, 9]
    flat = ser.with_columns(pl.when(pl.col("ts_ns") == T0 + 12 * M).then(106.0).otherwise(pl.col("price")).alias("price"))
    assert kin.approach_features(flat, q, atr, sample_s=60)["approach_bars"].to_list() == [0, 0, 0]  # unchanged close breaks the run
    assert kin.approach_features(ser, q, None, sample_s=60)["approach_distance_atr"].null_count() == 3



def test_displacement_toward_atr_by_hand():
    """Last print at t vs last print at or before t − 300 s, toward the level, in ATRs."""
    prints = pl.DataFrame({"ts_ns": T0 + S * np.array([0, 100, 200, 299, 301, 600, 601], dtype=np.int64),
                           "price": [100.0, 101.0, 102.0, 103.0, 104.0, 106.0, 99.0]})
    t = T0 + 600 * S  # t − 300 s = 300 s: last print at or before it is 103 (299 s); at t: 106 (the 601 s print is later)
    q = pl.DataFrame({"t_ns": [t, t, t, T0 + 250 * S], "dir_sign": pl.Series([1, -1, 1, 1], dtype=pl.Int8),
                      "atr": [1.5, 1.5, None, 2.0]})
    out = kin.displacement_toward_atr(prints, q)
    assert out.name == "displacement_5min_toward_atr"
    # (106 − 103) / 1.5 = 2 toward an UP level, −2 toward a DOWN one; no ATR → null;
    # 250 s: no price 300 s earlier (before the first print) → null
    assert out.to_list()[:2] == pytest.approx([2.0, -2.0])
    assert out.to_list()[2:] == [None, None]
    assert kin.displacement_toward_atr(prints, q, window_s=1)[0] == pytest.approx((106.0 - 104.0) / 1.5)


@pytest.mark.parametrize("seed", range(3))
def test_displacement_ignores_prints_after_t(seed):
    rng = np.random.default_rng(seed)
    tr = random_series(rng, 5_000)
    prints = tr.select(pl.col("ts_event").alias("ts_ns"), pl.col("price").cast(pl.Float64))
    times = T0 + np.arange(10 * 60, 90 * 60, 30, dtype=np.int64) * S + rng.integers(0, 30 * S, 160)
    q = pl.DataFrame({"t_ns": times, "dir_sign": pl.Series(rng.choice([-1, 1], len(times)), dtype=pl.Int8),
                      "atr": rng.uniform(1, 4, len(times))})
    before = kin.displacement_toward_atr(prints, q)
    t = int(times[70])
    after = prints.filter(pl.col("ts_ns") > t)
    changed = pl.concat([prints.filter(pl.col("ts_ns") <= t),
                         after.with_columns(pl.Series("price", rng.uniform(4000, 6000, after.height))),
                         pl.DataFrame({"ts_ns": [t + 1], "price": [9999.0]})]).sort("ts_ns", maintain_order=True)
    now = kin.displacement_toward_atr(changed, q)
    upto = times <= t
    assert now.filter(pl.Series(upto)).equals(before.filter(pl.Series(upto)))
    assert not now.equals(before)  # the perturbation reached later rows


# ---------------------------------------------------------------- causality and trailing buffer


def random_series(rng, n_trades=20_000, minutes=90):
    ts = np.sort(rng.integers(T0, T0 + minutes * M, n_trades))
    tr = pl.DataFrame({"ts_event": ts, "price": 5000 + 0.25 * np.cumsum(rng.integers(-2, 3, n_trades)),
                       "size": np.ones(n_trades, dtype=np.uint32), "aggressor": np.ones(n_trades, dtype=np.int8)})
    return tr


def features_at(tr, times, queries):
    b10 = br.bars_from_trades(tr, 10)
    ser = kin.price_series_from_bars(b10)
    k = kin.kinematics(ser, times)
    a = kin.approach_features(ser, queries, pl.DataFrame({"t_ns": times, "atr": np.full(len(times), 3.0)}))
    return k, a


@pytest.mark.parametrize("seed", range(4))
def test_causality_perturbing_trades_after_t(seed):
    rng = np.random.default_rng(seed)
    tr = random_series(rng)
    times = T0 + np.arange(30 * 60, 90 * 60, 30, dtype=np.int64) * S
    queries = pl.DataFrame({"t_ns": np.repeat(times, 2), "level_kind": ["A", "B"] * len(times),
                            "level_price": [5010.0, 4990.0] * len(times), "dir_sign": pl.Series([1, -1] * len(times), dtype=pl.Int8)})
    k, a = features_at(tr, times, queries)
    for t in (times[10], times[11] + 7 * S, int(rng.integers(times[0], times[-1]))):
        after = tr.filter(pl.col("ts_event") > t)
        changed = pl.concat([
            tr.filter(pl.col("ts_event") <= t),
            after.with_columns(pl.Series("price", rng.uniform(4000, 6000, after.height))),
            pl.DataFrame({"ts_event": [t + 1, t + 2 * S], "price": [9999.0, 1.0], "size": pl.Series([5, 5], dtype=pl.UInt32),
                          "aggressor": pl.Series([1, -1], dtype=pl.Int8)}),
        ]).sort("ts_event", maintain_order=True)
        k2, a2 = features_at(changed, times, queries)
        assert k.filter(pl.col("t_ns") <= t).equals(k2.filter(pl.col("t_ns") <= t))
        assert a.filter(pl.col("t_ns") <= t).equals(a2.filter(pl.col("t_ns") <= t))
        assert not k.equals(k2)  # the perturbation did reach later rows


def test_trailing_buffer_leaves_row_unchanged():
    """Rows at t from only the points after t − 20 min plus the last point at or before it."""
    rng = np.random.default_rng(11)
    ser = kin.price_series_from_bars(br.bars_from_trades(random_series(rng, 3_000), 10))  # sparse: gaps in the 10 s grid
    times = T0 + np.arange(40 * 60, 90 * 60, 30, dtype=np.int64) * S
    queries = pl.DataFrame({"t_ns": times, "level_kind": ["A"] * len(times), "level_price": [5000.0] * len(times),
                            "dir_sign": pl.Series([1] * len(times), dtype=pl.Int8)})
    full_k = kin.kinematics(ser, times)
    full_a = kin.approach_features(ser, queries)
    horizon = max(max(WINDOWS), kin.APPROACH_LOOKBACK_MIN) * M
    for i, t in enumerate(times):
        cut = t - horizon
        ts = ser["ts_ns"].to_numpy()
        keep_from = max(int(np.searchsorted(ts, cut, side="right")) - 1, 0)
        buffer = ser.slice(keep_from)
        assert kin.kinematics(buffer, [t]).equals(full_k.slice(i, 1))
        assert kin.approach_features(buffer, queries.slice(i, 1)).equals(full_a.slice(i, 1))
