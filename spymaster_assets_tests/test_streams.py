"""Pentaview streams: hand-computed values, orientations, tiers, bounds, causality; alerts, exit score."""

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from spymaster_assets.lib import stream_alerts as A
from spymaster_assets.lib import streams as S
from spymaster_assets.lib.state import state_schema

DAY = dt.date(2024, 12, 10)
T0_NS = 1_733_841_000_000_000_000  # 2024-12-10 09:30 ET
BAR_NS = 30_000_000_000
f = S.squash  # tanh(clip(z, ±4) / 2)


def state_rows(rows: list[dict]) -> pl.DataFrame:
    """State rows with every registered column: 0 for features, overridden per row; keys filled in."""
    schema = state_schema()
    base = {name: 0.0 for name, dtype in schema.items() if dtype == pl.Float64}
    base |= {"session": DAY, "level_kind": "OR_HIGH", "level_price": 6000.0, "dir_sign": 1, "time_bucket": "T30_60",
             "tier": "T3", "in_approach": False, "spot": 5999.0, "atr": 1.0, "d_atr": -1.0, "attempt_index": 1.0,
             "time_since_last_touch_s": None, "approach_bars": 0.0}
    filled = [base | {"t_ns": T0_NS + i * BAR_NS} | row for i, row in enumerate(rows)]
    return pl.DataFrame(filled, schema=schema)


def unit_stats(median: float = 0.0, scale: float = 1.0) -> pl.DataFrame:
    """Global stats only: z = (x − median) / scale for centred inputs, x / scale for the others."""
    features = S.normalized_features()
    return pl.DataFrame({"feature": features, "stratum": [S.GLOBAL_STRATUM] * len(features),
                         "median": [median] * len(features), "scale": [scale] * len(features),
                         "scale_source": ["mad"] * len(features), "n": [100] * len(features)}, schema=S.STREAM_STATS_SCHEMA)


def one(row: dict, stats: pl.DataFrame | None = None) -> dict:
    return S.compute_streams(state_rows([row]), unit_stats() if stats is None else stats).row(0, named=True)


# --- normalization ------------------------------------------------------------------------

def test_stats_per_time_bucket_with_global_fallback_below_30_values():
    values = list(range(1, 41))  # 40 values in T0_15: median 20.5, MAD 10
    history = pl.DataFrame({"time_bucket": ["T0_15"] * 40 + ["T15_30"] * 10,
                            "velocity_3min": [float(v) for v in values] + [100.0] * 10})
    stats = S.fit_stream_stats(history, ["velocity_3min", "ofi_60s"])
    rows = {(r["feature"], r["stratum"]): r for r in stats.iter_rows(named=True)}
    assert rows[("velocity_3min", "T0_15")]["median"] == 20.5
    assert rows[("velocity_3min", "T0_15")]["scale"] == pytest.approx(1.4826 * 10)
    assert ("velocity_3min", "T15_30") not in rows  # 10 values: falls back to the global row
    glob = rows[("velocity_3min", S.GLOBAL_STRATUM)]
    assert glob["n"] == 50 and glob["median"] == 25.5
    assert rows[("ofi_60s", S.GLOBAL_STRATUM)]["scale_source"] == "no_data"  # absent column: recorded, not invented


def test_rows_use_their_bucket_stats_else_global():
    stats = pl.concat([unit_stats(), pl.DataFrame({"feature": ["velocity_3min"], "stratum": ["T0_15"], "median": [0.0],
                                                   "scale": [4.0], "scale_source": ["mad"], "n": [50]},
                                                  schema=S.STREAM_STATS_SCHEMA)])
    frame = S.squashed_features(state_rows([{"velocity_3min": 2.0, "time_bucket": "T0_15"},
                                            {"velocity_3min": 2.0, "time_bucket": "T60_120"}]), stats)
    assert frame["f_velocity_3min"].to_list() == pytest.approx([f(0.5), f(2.0)])


# --- streams by hand and their orientation --------------------------------------------------

def test_momentum_by_hand_and_oriented_up():
    row = one({"velocity_3min": 2.0, "acceleration_3min": -1.0})  # toward the level from below = up
    expected = math.tanh(0.45 * f(2.0) + 0.25 * f(-1.0))
    assert row["sigma_m"] == pytest.approx(expected)
    # The same toward-level speed from above the level (DOWN approach) is price falling.
    above = one({"velocity_3min": 2.0, "acceleration_3min": -1.0, "dir_sign": -1})
    assert above["sigma_m"] == pytest.approx(-expected)


def test_flow_by_hand_and_oriented_up():
    row = one({"ofi_60s": 3.0, "tape_imbalance_60s": 0.5, "ofi_near_level_60s": 1.0, "dir_sign": -1})
    expected = math.tanh(0.40 * f(3.0) + 0.35 * f(0.5) - 0.30 * f(1.0))  # toward a support below price = selling
    assert row["sigma_f"] == pytest.approx(expected)
    assert one({"ofi_60s": 3.0})["sigma_f"] > 0 > one({"ofi_60s": -3.0})["sigma_f"]


def test_barrier_is_positive_when_the_defending_wall_lets_price_through():
    stats = unit_stats(median=1.0)  # centred inputs (wall ratio, replenish share, vacuum) around 1
    thin = {"wall_ratio_30min": 0.2, "defending_depth_chg_2min": -2.0, "replenish_share_2min": 1.0, "vacuum_duration_s": 1.0}
    expected = math.tanh(-0.45 * f(-0.8) - 0.35 * f(-2.0) - 0.30 * f(0.0) + 0.40 * f(0.0))
    assert one(thin, stats)["sigma_b"] == pytest.approx(expected) and expected > 0
    # Level frame: a thin bid wall under price coming down (DOWN) is just as positive ...
    assert one(thin | {"dir_sign": -1}, stats)["sigma_b"] == pytest.approx(expected)
    # ... and a thick, building wall is negative.
    assert one({"wall_ratio_30min": 3.0, "defending_depth_chg_2min": 2.0}, stats)["sigma_b"] < 0


def test_dealer_is_positive_when_dealers_are_short_gamma():
    row = one({"gex_band_2": -2.0, "net_gex": -1.0})
    assert row["sigma_d"] == pytest.approx(math.tanh(0.60 * f(2.0) + 0.60 * f(1.0)))
    assert one({"gex_band_2": 2.0, "gex_band_1": 1.0, "net_gex": 3.0})["sigma_d"] < 0


def test_setup_by_hand():
    row = one({"d_atr": -0.75, "approach_velocity": 1.0, "attempt_index": 3.0, "level_stacking_5pt": 2.0,
               "level_stacking_10pt": 4.0, "time_since_last_touch_s": 900.0, "approach_bars": 5.0})
    proximity, freshness, confluence, recency, cleanness = math.exp(-0.5), 0.6, 0.5, math.exp(-1.0), 0.5
    total = (0.50 * (2 * proximity - 1) + 0.25 * f(1.0) + 0.30 * (2 * freshness - 1) + 0.20 * (2 * confluence - 1)
             + 0.10 * (2 * recency - 1) + 0.15 * (2 * cleanness - 1))
    assert row["sigma_s"] == pytest.approx(math.tanh(total))
    never_touched = one({"d_atr": 0.0, "time_since_last_touch_s": None})
    assert never_touched["sigma_s"] is not None  # recency 0, not a null stream


def test_merged_and_composites_by_hand():
    row = one({"velocity_3min": 2.0, "ofi_60s": -1.0, "wall_ratio_30min": -1.0, "gex_band_2": -1.0, "d_atr": -0.5})
    m, fl, b, d, s = (row[k] for k in ("sigma_m", "sigma_f", "sigma_b", "sigma_d", "sigma_s"))
    assert row["sigma_p"] == pytest.approx(math.tanh(0.55 * m + 0.45 * fl))
    assert row["sigma_r"] == pytest.approx(math.tanh(0.70 * b + 0.30 * s))
    assert row["alignment"] == pytest.approx((m + fl + b) / 3)  # dir_sign +1: σ_B's price frame is σ_B
    assert row["divergence"] == pytest.approx((fl - m) / 2)
    assert row["alignment_dealer"] == pytest.approx(row["alignment"] * (2 + d) / 3)


@pytest.mark.parametrize("tier, null", [
    ("T0", {"sigma_f", "sigma_b", "sigma_d", "sigma_p", "sigma_r", "alignment", "divergence", "alignment_dealer"}),
    ("T1", {"sigma_f", "sigma_b", "sigma_d", "sigma_p", "sigma_r", "alignment", "divergence", "alignment_dealer"}),
    ("T2", {"sigma_d", "alignment_dealer"}),
    ("T3", set()),
])
def test_streams_of_absent_tiers_are_null_not_zero(tier, null):
    row = one({"tier": tier, "velocity_3min": 1.0, "ofi_60s": 1.0, "gex_band_2": 1.0})
    assert {c for c in S.STREAM_COLUMNS if row[c] is None} == null
    assert S.stream_tiers()["sigma_f"] == "T2" and S.stream_tiers()["sigma_d"] == "T3"


def test_a_lake_without_history_gives_null_normalized_streams():
    stats = S.fit_stream_stats(pl.DataFrame({"time_bucket": []}, schema={"time_bucket": pl.Utf8}))
    row = one({"velocity_3min": 1.0, "d_atr": 0.2}, stats)
    assert row["sigma_m"] is None and row["sigma_f"] is None and row["sigma_s"] is not None


def random_session(rng: np.random.Generator, bars: int = 60) -> pl.DataFrame:
    """Two levels × `bars` bars of random (heavy-tailed) feature values."""
    rows = []
    for level, sign in (("OR_HIGH", 1), ("PM_LOW", -1)):
        for i in range(bars):
            row = {name: float(rng.standard_t(2) * 10) for name in S.normalized_features()}
            row |= {"level_kind": level, "dir_sign": sign, "d_atr": float(rng.normal() * 3),
                    "attempt_index": float(rng.integers(1, 8)), "approach_bars": float(rng.integers(0, 11)),
                    "level_stacking_5pt": float(rng.integers(0, 5)), "level_stacking_10pt": float(rng.integers(0, 6)),
                    "time_since_last_touch_s": float(rng.uniform(0, 5000))}
            rows.append(row)
    frame = state_rows(rows)
    return frame.with_columns((T0_NS + (pl.int_range(pl.len()) % bars) * BAR_NS).alias("t_ns")).sort(["t_ns", "level_kind"])


def test_every_stream_and_composite_is_in_bounds():
    streams = S.compute_streams(random_session(np.random.default_rng(1)), unit_stats(scale=0.01))
    for column in S.STREAM_COLUMNS:
        values = streams[column].drop_nulls()
        assert values.len() == streams.height and values.abs().max() <= 1.0, column


def test_perturbing_rows_after_t_leaves_every_value_at_t_unchanged():
    """Streams, derivatives and alerts at t read rows ≤ t only (the EWM runs forward in time)."""
    rng = np.random.default_rng(7)
    state = random_session(rng)
    cut = T0_NS + 30 * BAR_NS
    future = random_session(np.random.default_rng(99))
    perturbed = pl.concat([state.filter(pl.col("t_ns") <= cut), future.filter(pl.col("t_ns") > cut)])
    stats = unit_stats(scale=3.0)
    before, after = (S.compute_streams(s, stats).filter(pl.col("t_ns") <= cut) for s in (state, perturbed))
    assert before.equals(after)
    assert not S.compute_streams(state, stats).equals(S.compute_streams(perturbed, stats))  # the future did change
    alerts = [A.compute_alerts(S.compute_streams(s, stats)).filter(pl.col("t_ns") <= cut) for s in (state, perturbed)]
    assert alerts[0].equals(alerts[1])


def test_derivatives_are_backward_differences_of_the_ewm_per_level():
    values = [0.0, 0.5, 0.5, -0.2]
    state = state_rows([{"velocity_3min": v} for v in values])
    streams = S.compute_streams(state, unit_stats())
    m = [math.tanh(0.45 * f(v)) for v in values]
    smooth = [m[0]]
    for x in m[1:]:
        smooth.append(0.3 * x + 0.7 * smooth[-1])
    slope = [None] + [b - a for a, b in zip(smooth, smooth[1:])]
    curvature = [None, None] + [b - a for a, b in zip(slope[1:], slope[2:])]
    assert streams["sigma_m_smooth"].to_list() == pytest.approx(smooth)
    assert streams["sigma_m_slope"].to_list()[1:] == pytest.approx(slope[1:]) and streams["sigma_m_slope"][0] is None
    assert streams["sigma_m_curvature"].to_list()[2:] == pytest.approx(curvature[2:])
    assert streams["sigma_m_jerk"].to_list()[3] == pytest.approx(curvature[3] - curvature[2])


# --- alerts and hysteresis ------------------------------------------------------------------

def test_hysteresis_on_a_hand_made_sequence():
    T, F = True, False
    conditions = [T, F, T, T, T, F, T, F, F, F, T, T, None, None, None]
    # on after 2 consecutive true, off after 3 consecutive false (None = false)
    expected = [F, F, F, T, T, T, T, T, T, F, F, T, T, T, F]
    assert A.hysteresis(conditions, on_bars=2, off_bars=3) == expected
    assert A.hysteresis(conditions, on_bars=1, off_bars=1) == [bool(c) for c in conditions]


def stream_frame(rows: list[dict]) -> pl.DataFrame:
    schema = S.streams_schema()
    base = {c: 0.0 for c, t in schema.items() if t == pl.Float64} | {
        "session": DAY, "level_kind": "OR_HIGH", "dir_sign": 1, "time_bucket": "T30_60", "tier": "T3", "in_approach": True,
        "d_atr": -0.5}
    return pl.DataFrame([base | {"t_ns": T0_NS + i * BAR_NS} | r for i, r in enumerate(rows)], schema=schema)


def test_continuation_alert_turns_on_after_two_bars_and_off_after_three():
    pressure = [0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0]
    alerts = A.compute_alerts(stream_frame([{"sigma_p": p, "sigma_p_slope": 0.01} for p in pressure]))
    up = alerts.filter(pl.col("alert") == "CONTINUATION_UP").sort("t_ns")
    bars = ((up["t_ns"] - T0_NS) // BAR_NS).to_list()
    assert bars == [1, 2, 3, 4]  # on at the 2nd bar of the condition, off at the 3rd bar without it
    assert up["onset"].to_list() == [True, False, False, False]
    assert up["bars_active"].to_list() == [1, 2, 3, 4]
    assert up["confidence"].to_list() == pytest.approx([0.5, 0.5, 0.0, 0.0])


def test_alerts_respect_their_frames():
    rows = [{"sigma_m": -0.6, "sigma_b": 0.5, "dir_sign": 1, "sigma_d": -0.5}] * 3
    names = set(A.compute_alerts(stream_frame(rows))["alert"].to_list())
    assert {"REVERSAL_RISK_UP", "PIN_REGIME"} <= names and "REVERSAL_RISK_DOWN" not in names
    # σ_B > 0 below a support level (DOWN approach) is a thin bid wall: that favours down.
    flipped = set(A.compute_alerts(stream_frame([r | {"dir_sign": -1, "sigma_m": 0.6} for r in rows]))["alert"].to_list())
    assert "REVERSAL_RISK_DOWN" in flipped and "REVERSAL_RISK_UP" not in flipped


# --- exit score -----------------------------------------------------------------------------

def test_exit_score_by_hand():
    row = {"sigma_p": 0.5, "sigma_p_slope": 0.025, "sigma_b": 0.2, "dir_sign": 1, "sigma_d": 0.0,
           "sigma_m": 0.9, "sigma_m_slope": -1.0}
    long, short = A.exit_score(row, "LONG"), A.exit_score(row, "SHORT")
    score = math.tanh(1.5 * (0.50 * 0.5 + 0.30 * 0.5 + 0.20 * 0.2))
    assert long["score"] == pytest.approx(score) and long["action"] == "HOLD_ADD"
    assert short["score"] == pytest.approx(-score) and short["action"] == "EXIT"
    assert long["components"] == pytest.approx({"pressure": 0.5, "trend": 0.5, "barrier": 0.2})
    # Fuel magnifies, a pin shrinks; both keep the sign.
    assert A.exit_score(row | {"sigma_d": 1.0}, "LONG")["score"] == pytest.approx(math.tanh(1.5 * 0.44 * 1.25))
    weak = {"sigma_p": 0.1, "sigma_p_slope": -0.01, "sigma_b": -0.1, "dir_sign": 1}
    assert A.exit_score(weak, "LONG")["action"] == "REDUCE"  # tanh(1.5·(0.05 − 0.06 − 0.02)) = −0.045
    assert A.exit_score(weak, "SHORT")["action"] == "HOLD_TRAIL"


def test_exit_score_without_book_uses_momentum_and_renormalizes():
    t0_row = {"sigma_p": None, "sigma_b": None, "sigma_m": -0.4, "sigma_m_slope": -0.05, "dir_sign": -1}
    short = A.exit_score(t0_row, "SHORT")
    assert short["score"] == pytest.approx(math.tanh(1.5 * (0.50 * 0.4 + 0.30 * 1.0) / 0.80))
    assert short["action"] == "HOLD_ADD" and short["components"]["barrier"] is None
    assert A.exit_score({"dir_sign": 1}, "LONG")["action"] is None  # nothing known: no advice
    with pytest.raises(ValueError, match="LONG or SHORT"):
        A.exit_score(t0_row, "FLAT")


# --- realised outcomes (report only) ---------------------------------------------------------

def test_forward_moves_by_hand():
    spot = [100.0, 101.0, 99.0, 102.0, 100.0]
    market = pl.DataFrame({"session": [DAY] * 5, "t_ns": [T0_NS + i * BAR_NS for i in range(5)], "spot": spot, "atr": [2.0] * 5})
    moves = A.forward_moves(market, bars=2)
    assert moves["t_ns"].to_list() == [T0_NS, T0_NS + BAR_NS, T0_NS + 2 * BAR_NS]  # the last two lack 2 future bars
    assert moves["rise_atr"].to_list() == pytest.approx([0.5, 0.5, 1.5])
    assert moves["fall_atr"].to_list() == pytest.approx([0.5, 1.0, -0.5])
    assert moves["return_atr"].to_list() == pytest.approx([-0.5, 0.5, 0.5])


def test_hit_rate_counts_onsets_once_per_bar_and_compares_with_the_base_rate():
    streams = stream_frame([{"sigma_p": 0.6, "sigma_p_slope": 0.01}] * 3 + [{"sigma_p": 0.0}] * 4)
    streams = pl.concat([streams, streams.with_columns(pl.lit("PM_HIGH").alias("level_kind"))])  # same signal, 2 levels
    alerts = A.compute_alerts(streams)
    moves = pl.DataFrame({"session": [DAY] * 7, "t_ns": [T0_NS + i * BAR_NS for i in range(7)],
                          "rise_atr": [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0], "fall_atr": [0.0] * 7, "return_atr": [0.0] * 7})
    report = {r["alert"]: r for r in A.alert_hit_rates(streams, alerts, moves)}
    continuation = report["CONTINUATION_UP"]
    assert continuation["n_onsets"] == 1 and continuation["hit_rate"] == 1.0  # onset at bar 1, price rose 1 ATR
    assert continuation["base_rate"] == pytest.approx(2 / 7) and continuation["n_base_bars"] == 7
