"""Black-76 and dealer features: textbook values, sign conventions, bands, tide, causality."""

import numpy as np
import polars as pl
import pytest

from spymaster_assets.lib.dbn_decode import aggressor_sign
from spymaster_assets.lib.features import black76 as b76
from spymaster_assets.lib.features import dealer as dl

S = 1_000_000_000
M = 60 * S
T = 1_700_000_000 * S  # the query time of the fixtures
EXPIRY = T + 6 * 3600 * S
STRIKES = [4990.0, 4995.0, 5000.0, 5005.0, 5010.0]
SPOT = 5000.0


# ---------------------------------------------------------------- Black-76


def test_black76_textbook_value_and_put_call_parity():
    # Hull, Options Futures and Other Derivatives, Black's model example: F = K = 20, r = 9 %,
    # T = 4 months, σ = 25 % → European put on the futures ≈ 1.12.
    assert b76.price(20.0, 20.0, 4 / 12, 0.25, False, r=0.09) == pytest.approx(1.1166, abs=1e-4)
    F, K, T_, sig, r = 5000.0, np.array([4800.0, 5000.0, 5250.0]), 0.05, 0.18, 0.04
    c, p = b76.price(F, K, T_, sig, True, r), b76.price(F, K, T_, sig, False, r)
    np.testing.assert_allclose(c - p, np.exp(-r * T_) * (F - K), atol=1e-9)


def test_greeks_match_finite_differences():
    F, K, T_, sig = 5000.0, np.array([4950.0, 5000.0, 5060.0]), 2 / 365, 0.16
    h = 0.01
    for call in (True, False):
        up, mid, dn = (b76.price(F + d, K, T_, sig, call) for d in (h, 0.0, -h))
        np.testing.assert_allclose(b76.delta(F, K, T_, sig, call), (up - dn) / (2 * h), rtol=1e-6)
        np.testing.assert_allclose(b76.gamma(F, K, T_, sig), (up - 2 * mid + dn) / h**2, rtol=1e-4)
    assert b76.delta(F, 5000.0, T_, sig, True) - b76.delta(F, 5000.0, T_, sig, False) == pytest.approx(1.0)


def test_implied_vol_round_trip_and_bounds():
    rng = np.random.default_rng(0)
    n = 2000
    K = rng.uniform(4700, 5300, n)
    T_ = np.exp(rng.uniform(np.log(10 / 525_600), np.log(0.25), n))
    sig = rng.uniform(0.05, 1.0, n)
    call = rng.random(n) < 0.5
    p = b76.price(5000.0, K, T_, sig, call)
    ok = p - np.where(call, np.maximum(5000 - K, 0), np.maximum(K - 5000, 0)) > 0.01  # a real time value
    iv = b76.implied_vol(p[ok], 5000.0, K[ok], T_[ok], call[ok])
    np.testing.assert_allclose(iv, sig[ok], atol=1e-6)
    # Below intrinsic, above the upper bound, or non-positive inputs → NaN (never a made-up vol).
    bad = b76.implied_vol([50.0, 5001.0, 1.0, 1.0], [5000.0, 5000.0, 5000.0, 5000.0], [4900.0, 4900.0, 5000.0, 5000.0],
                          [0.01, 0.01, 0.0, 0.01], [True, True, True, True])
    assert np.isnan(bad[:3]).all() and np.isfinite(bad[3])
    # Elementwise: an option's IV does not depend on the batch it is solved in.
    assert b76.implied_vol(p[ok][:1], 5000.0, K[ok][:1], T_[ok][:1], call[ok][:1])[0] == iv[0]


# ---------------------------------------------------------------- fixtures


def definitions(strikes=STRIKES, expiry=EXPIRY):
    n = len(strikes)
    return pl.DataFrame({
        "instrument_id": pl.Series(range(2 * n), dtype=pl.UInt32),
        "right": ["C"] * n + ["P"] * n,
        "strike": list(strikes) * 2,
        "expiration": [expiry] * (2 * n),
    })


def iid(defs, right, strike):
    return int(defs.filter((pl.col("right") == right) & (pl.col("strike") == strike))["instrument_id"][0])


def option_trades(defs, rows):
    """rows: (ts, instrument_id, price, size, aggressor)."""
    schema = {"ts_event": pl.Int64, "instrument_id": pl.UInt32, "price": pl.Float64, "size": pl.UInt32, "aggressor": pl.Int8}
    frame = pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
    return frame.join(defs.select("instrument_id", "right", "strike", "expiration"), on="instrument_id", how="left")


def quotes(defs, sigma_by_id, ts, spot=SPOT):
    """Quotes whose mid is the Black-76 price at the given vol (spread ±0.05)."""
    rows = []
    for r in defs.iter_rows(named=True):
        if r["instrument_id"] in sigma_by_id:
            tte = (r["expiration"] - T) / dl.NS_PER_YEAR
            mid = float(b76.price(spot, r["strike"], tte, sigma_by_id[r["instrument_id"]], r["right"] == "C"))
            rows.append((ts, r["instrument_id"], mid - 0.05, mid + 0.05))
    return pl.DataFrame(rows, schema={"ts_event": pl.Int64, "instrument_id": pl.UInt32, "bid_px_00": pl.Float64,
                                      "ask_px_00": pl.Float64}, orient="row")


def oi_frame(rows, ts=T - 3600 * S):
    return pl.DataFrame({"instrument_id": pl.Series([r[0] for r in rows], dtype=pl.UInt32),
                         "oi_ts_event": [ts] * len(rows), "open_interest": [r[1] for r in rows]})


def spot_frame(times, spot=SPOT):
    return pl.DataFrame({"t_ns": list(times), "spot": [spot] * len(times)})


def queries(times, levels=(5000.0,)):
    rows = [(t, f"L{i}", lvl, 1) for t in times for i, lvl in enumerate(levels)]
    return pl.DataFrame(rows, schema={"t_ns": pl.Int64, "level_kind": pl.Utf8, "level_price": pl.Float64,
                                      "dir_sign": pl.Int8}, orient="row")


# ---------------------------------------------------------------- sign conventions


def test_aggressor_convention_is_pinned():
    assert aggressor_sign(np.array([b"B", b"A", b"N"])).tolist() == [1, -1, 0]


def test_customer_buying_calls_makes_dealers_short_gamma():
    defs = definitions()
    call = iid(defs, "C", 5000.0)
    mbp = quotes(defs, {i: 0.2 for i in defs["instrument_id"]}, T - M)
    cfg = dl.DealerConfig(oi_convention="exclude")
    buy = option_trades(defs, [(T - 10 * S, call, 20.0, 10, 1)])  # customer lifts the offer: side 'B'
    out = dl.dealer_features(queries([T]), spot_frame([T]), defs, buy, mbp, None, cfg)
    state = dl.option_state([T], spot_frame([T]), defs, buy, mbp, None, cfg)
    row = state.filter(pl.col("instrument_id") == call).row(0, named=True)
    assert row["position"] == -10 and row["iv_source"] == "mid" and row["iv"] == pytest.approx(0.2, abs=1e-9)
    gamma = float(b76.gamma(SPOT, 5000.0, (EXPIRY - T) / dl.NS_PER_YEAR, 0.2))
    expected = -10 * gamma * SPOT**2 * 0.01 * 50  # USD per 1 % move
    assert row["gex"] == pytest.approx(expected, rel=1e-6)
    assert expected < 0 and out["gex_band_1"][0] == pytest.approx(expected, rel=1e-6)
    assert out["net_gex"][0] == pytest.approx(expected, rel=1e-6)
    sell = option_trades(defs, [(T - 10 * S, call, 20.0, 10, -1)])  # customer hits the bid → dealer long
    assert dl.dealer_features(queries([T]), spot_frame([T]), defs, sell, mbp, None, cfg)["net_gex"][0] > 0
    unknown = option_trades(defs, [(T - 10 * S, call, 20.0, 10, 0)])
    assert dl.dealer_features(queries([T]), spot_frame([T]), defs, unknown, mbp, None, cfg)["net_gex"][0] == 0.0


def test_open_interest_conventions():
    defs = definitions()
    call, put = iid(defs, "C", 5000.0), iid(defs, "P", 5000.0)
    mbp = quotes(defs, {i: 0.2 for i in defs["instrument_id"]}, T - M)
    none = option_trades(defs, [])

    def net(rows, convention, ts=T - 3600 * S):
        cfg = dl.DealerConfig(oi_convention=convention)
        return dl.dealer_features(queries([T]), spot_frame([T]), defs, none, mbp, oi_frame(rows, ts), cfg)["net_gex"][0]

    assert net([(call, 100)], "customer_long_puts_short_calls") > 0  # customers wrote calls → dealers long
    assert net([(put, 100)], "customer_long_puts_short_calls") < 0  # customers bought puts → dealers short
    assert net([(call, 100)], "customer_long") < 0 and net([(put, 100)], "customer_long") < 0
    assert net([(call, 100), (put, 100)], "exclude") == 0.0
    assert net([(call, 100)], "customer_long_puts_short_calls", ts=T + S) == 0.0  # published after t: not yet known
    assert dl.DealerConfig().oi_convention == "customer_long_puts_short_calls"
    with pytest.raises(ValueError):
        dl.DealerConfig(oi_convention="guess")


def test_flow_only_gamma_ignores_open_interest_whatever_the_convention():
    """Customers bought calls at the level today while the standing put OI (by the default
    convention: customers long puts) says dealers are short gamma there too — and a big call OI
    says long. flow_gex_band_2 reads today's trades alone: dealers short → negative, under
    every OI convention; gex_band_2 follows the convention."""
    defs = definitions()
    call = iid(defs, "C", 5000.0)
    mbp = quotes(defs, {i: 0.2 for i in defs["instrument_id"]}, T - M)
    bought = option_trades(defs, [(T - 10 * S, call, 20.0, 10, 1)])
    big_call_oi = oi_frame([(call, 5000)])
    flow_only = []
    for convention in dl.OI_CONVENTIONS:
        out = dl.dealer_features(queries([T]), spot_frame([T]), defs, bought, mbp, big_call_oi,
                                 dl.DealerConfig(oi_convention=convention))
        flow_only.append(out["flow_gex_band_2"][0])
        if convention == "customer_long_puts_short_calls":
            assert out["gex_band_2"][0] > 0  # the assumed written calls outweigh today's buying
    assert all(v < 0 for v in flow_only) and max(flow_only) == min(flow_only)
    sold = option_trades(defs, [(T - 10 * S, call, 20.0, 10, -1)])
    assert dl.dealer_features(queries([T]), spot_frame([T]), defs, sold, mbp, big_call_oi)["flow_gex_band_2"][0] > 0
    far_level = queries([T], levels=(5030.0,))  # nearest strike 5010: beyond ±2 strikes
    assert dl.dealer_features(far_level, spot_frame([T]), defs, bought, mbp, None)["flow_gex_band_2"][0] == 0.0


def test_flow_and_oi_add_up():
    defs = definitions()
    put = iid(defs, "P", 4995.0)
    mbp = quotes(defs, {i: 0.2 for i in defs["instrument_id"]}, T - M)
    tr = option_trades(defs, [(T - 20 * S, put, 5.0, 3, 1), (T - 10 * S, put, 5.0, 1, -1), (T + S, put, 5.0, 50, 1)])
    state = dl.option_state([T], spot_frame([T]), defs, tr, mbp, oi_frame([(put, 40)]))
    assert state.filter(pl.col("instrument_id") == put)["position"][0] == -40 - 3 + 1  # the trade after t is ignored


# ---------------------------------------------------------------- bands, asymmetry, tide


def test_band_sums_by_hand():
    strikes = [4985.0, 4990.0, 4995.0, 5000.0, 5005.0, 5010.0, 5015.0, 5020.0]
    state = pl.DataFrame({
        "t_ns": [T] * 16,
        "strike": strikes + strikes,
        "right": ["C"] * 8 + ["P"] * 8,
        "gex": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0] + [-10.0] * 8,
        "flow_gex": [0.5] * 8 + [-1.0] * 8,
    }).sort("t_ns", "strike", "right")
    q = queries([T], levels=(5000.0, 5002.5))
    got = dl._band_sums(state, q, 5.0, dl.DealerConfig())
    # L = 5000: ±1 strike = 4995..5005 → calls 3+4+5, puts −30; ±2 = 4990..5010; ±3 = 4985..5015
    assert got["gex_band_1"][0] == 12 - 30 and got["gex_band_2"][0] == 20 - 50 and got["gex_band_3"][0] == 28 - 70
    assert got["gex_calls_band_2"][0] == 20 and got["gex_puts_band_2"][0] == -50
    assert got["flow_gex_band_2"][0] == 5 * 0.5 - 5 * 1.0  # 4990..5010: five strikes of each right
    # above 5000 within 3 strikes: 5005, 5010, 5015 → 18 − 30 = −12; below: 4985, 4990, 4995 → 6 − 30 = −24
    assert got["gex_asymmetry"][0] == pytest.approx((-12 - -24) / (12 + 24))
    # L = 5002.5 (between strikes): ±1 strike = [4997.5, 5007.5] → 5000, 5005
    assert got["gex_band_1"][1] == 9 - 20
    assert got["net_gex"][0] == got["net_gex"][1] == 36 - 80


def test_strike_step_inferred_from_definitions():
    assert dl.infer_strike_step(definitions([4900.0, 4950.0, 4975.0, 4980.0, 4985.0, 4990.0, 4995.0, 5000.0])) == 5.0
    assert dl.infer_strike_step(definitions([5000.0])) is None


def test_premium_tide_windows_by_hand():
    defs = definitions()
    call, put = iid(defs, "C", 5000.0), iid(defs, "P", 5000.0)
    tr = option_trades(defs, [
        (T - 40 * S, call, 10.0, 2, 1),   # in the 5-min window only: +2·10·50 = +1000
        (T - 30 * S, call, 5.0, 1, -1),   # exactly t − 30 s: outside (t − 30 s, t], inside 5 min: −250
        (T, put, 2.5, 3, 1),              # at t: included: +375
        (T + S, call, 1.0, 1, 1),         # after t: never
        (T - 301 * S, put, 100.0, 1, 1),  # older than 5 min
    ])
    tide = dl.premium_tide(tr, [T]).row(0, named=True)
    assert (tide["tide_calls_30s"], tide["tide_puts_30s"], tide["tide_calls_5min"], tide["tide_puts_5min"]) == (0.0, 375.0, 750.0, 375.0)


def test_iv_fallback_nearest_strike_then_constant():
    defs = definitions()
    known = {iid(defs, "C", 5005.0): 0.30, iid(defs, "C", 4990.0): 0.25}  # calls only; no put quotes
    mbp = quotes(defs, known, T - M)
    state = dl.option_state([T], spot_frame([T]), defs, option_trades(defs, []), mbp, None)
    by = {(r["right"], r["strike"]): (r["iv_source"], r["iv"]) for r in state.iter_rows(named=True)}
    assert by[("C", 5005.0)][0] == "mid" and by[("C", 5005.0)][1] == pytest.approx(0.30, abs=1e-8)
    assert by[("C", 5010.0)][0] == "neighbour" and by[("C", 5010.0)][1] == pytest.approx(0.30, abs=1e-8)
    assert by[("C", 4995.0)][1] == pytest.approx(0.25, abs=1e-8)  # 5 below vs 10 above → 4990's
    assert by[("C", 5000.0)][1] == pytest.approx(0.30, abs=1e-8)  # 5005 is 5 away, 4990 is 10
    assert by[("P", 5000.0)] == ("constant", dl.DealerConfig().fallback_iv)


def test_no_options_means_null_not_zero():
    empty = definitions().head(0)
    out = dl.dealer_features(queries([T]), spot_frame([T]), empty, option_trades(empty, []), quotes(empty, {}, T), None)
    assert all(out[c].null_count() == 1 for c in dl.gex_columns(dl.DEFAULT) + dl.tide_columns(dl.DEFAULT))
    defs = definitions()
    no_spot = dl.dealer_features(queries([T]), spot_frame([T]).head(0), defs, option_trades(defs, []),
                                 quotes(defs, {0: 0.2}, T), None)
    assert no_spot["net_gex"].null_count() == 1  # spot unknown → GEX unknown


def test_features_registered():
    names = [f.name for f in dl.FEATURES]
    assert set(dl.gex_columns(dl.DEFAULT) + dl.tide_columns(dl.DEFAULT)) == set(names)
    assert all(f.family == "dealer" and f.tier == "T3" for f in dl.FEATURES)


# ---------------------------------------------------------------- causality and trailing buffer


def random_world(rng, n_trades=3000, n_quotes=6000):
    strikes = list(np.arange(4900.0, 5105.0, 5.0))
    defs = pl.concat([definitions(strikes, T + 8 * 3600 * S), definitions(strikes, T + 3 * 86400 * S)
                      .with_columns(pl.col("instrument_id") + 1000)])
    ids = defs["instrument_id"].to_numpy()
    start = T - 4 * 3600 * S
    ts = np.sort(rng.integers(start, T + 3600 * S, n_trades))
    tr = option_trades(defs, list(zip(ts.tolist(), rng.choice(ids, n_trades).tolist(), rng.uniform(0.25, 60, n_trades).round(2).tolist(),
                                      rng.integers(1, 50, n_trades).tolist(), rng.choice([-1, 0, 1], n_trades).tolist())))
    qts = np.sort(rng.integers(start, T + 3600 * S, n_quotes))
    bid = rng.uniform(0.05, 80, n_quotes)
    mbp = pl.DataFrame({"ts_event": qts, "instrument_id": rng.choice(ids, n_quotes).astype(np.uint32), "bid_px_00": bid,
                        "ask_px_00": bid + rng.choice([0.05, 0.25, 1.0], n_quotes)})
    oi = oi_frame([(int(i), int(v)) for i, v in zip(ids, rng.integers(0, 2000, len(ids)))])
    times = T + np.arange(0, 3600, 30, dtype=np.int64) * S
    spot = pl.DataFrame({"t_ns": times, "spot": 5000 + np.cumsum(rng.normal(0, 1, len(times)))})
    q = queries(times, levels=(4987.5, 5000.0, 5031.0))
    return defs, tr, mbp, oi, spot, q


@pytest.mark.parametrize("seed", range(3))
def test_causality_perturbing_option_events_after_t(seed):
    rng = np.random.default_rng(seed)
    defs, tr, mbp, oi, spot, q = random_world(rng)
    base = dl.dealer_features(q, spot, defs, tr, mbp, oi)
    assert base["net_gex"].null_count() == 0
    for t in (int(q["t_ns"][0]), int(q["t_ns"][30]) + 1, int(rng.integers(T, T + 3600 * S))):
        late_tr = tr.filter(pl.col("ts_event") > t)
        tr2 = pl.concat([
            tr.filter(pl.col("ts_event") <= t),
            late_tr.with_columns(pl.Series("price", rng.uniform(0.25, 60, late_tr.height)),
                                 pl.Series("size", rng.integers(1, 500, late_tr.height).astype(np.uint32)),
                                 pl.Series("aggressor", rng.choice([-1, 1], late_tr.height).astype(np.int8))),
        ])
        late_q = mbp.filter(pl.col("ts_event") > t)
        extra_q = mbp.head(50).with_columns(pl.Series("ts_event", np.full(50, t + 1)))
        mbp2 = pl.concat([mbp.filter(pl.col("ts_event") <= t), late_q.with_columns(pl.col("bid_px_00") * 2, pl.col("ask_px_00") * 3), extra_q])
        spot2 = spot.with_columns(pl.when(pl.col("t_ns") > t).then(pl.col("spot") + 40).otherwise(pl.col("spot")).alias("spot"))
        again = dl.dealer_features(q, spot2, defs, tr2, mbp2, oi)
        assert base.filter(pl.col("t_ns") <= t).equals(again.filter(pl.col("t_ns") <= t))
        assert not base.equals(again)


def test_trailing_buffer_tide_and_flow_start():
    rng = np.random.default_rng(7)
    defs, tr, mbp, oi, spot, q = random_world(rng)
    t = int(q["t_ns"][60])
    q1 = q.filter(pl.col("t_ns") == t)
    # Tide needs only the last 5 minutes of trades.
    full = dl.premium_tide(tr, [t])
    assert dl.premium_tide(tr.filter(pl.col("ts_event") > t - 300 * S), [t]).equals(full)
    # Positions are cumulative from flow_start: trades before it, and quotes superseded before
    # the query time, never matter.
    cfg = dl.DealerConfig(flow_start_ns=T - 3600 * S)
    full_d = dl.dealer_features(q1, spot, defs, tr, mbp, oi, cfg)
    last_quotes = mbp.filter(pl.col("ts_event") <= t).sort("ts_event").unique("instrument_id", keep="last")
    trimmed = dl.dealer_features(q1, spot, defs, tr.filter(pl.col("ts_event") >= cfg.flow_start_ns),
                                 pl.concat([last_quotes, mbp.filter(pl.col("ts_event") > t)]), oi, cfg)
    assert trimmed.equals(full_d)
    assert not full_d.equals(dl.dealer_features(q1, spot, defs, tr, mbp, oi))  # flow_start does matter
