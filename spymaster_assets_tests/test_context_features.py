"""Context features that mean what they say, on hand-made T0 and T1 sessions run through the
real silver build (bars → anchors → state) and the episode description.

Level: one PM_HIGH at 102.0 known from the open; price idles at 100 and touches it twice, so
every expected number below is hand-computable: attempt numbers, the seconds between touches,
which side price came from and how far past the level it closed.
"""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from spymaster_assets.lib.calendar import et_to_ns, session_window
from spymaster_assets.lib.episodes import (
    AGES_WITH_CLOCK,
    KEY_SERIES,
    MISSING_MEANS,
    describe_setups,
    missing_vector_values,
    vector_layout,
)
from spymaster_assets.lib.events import TouchConfig
from spymaster_assets.lib.features import registry
from spymaster_assets.lib.features.context import NEVER_TOUCHED_S
from spymaster_assets.lib.state import SessionInputs, StateConfig, anchor_state, build_bars, build_state, find_session_anchors
from spymaster_assets.lib.tiers import tier_rank

S = 1_000_000_000
SESSION = dt.date(2024, 12, 9)
OPEN_NS = session_window(SESSION).rth_open_ns
LEVEL = 102.0
LEVELS = pl.DataFrame({"level_kind": ["PM_HIGH"], "price": [LEVEL], "known_at_ns": [OPEN_NS]})


def at(clock: str) -> int:
    return et_to_ns(SESSION, dt.time.fromisoformat(clock))


def silver(inputs: SessionInputs):
    bars = build_bars(inputs)
    events = find_session_anchors(inputs, bars, LEVELS, StateConfig())
    state = build_state(inputs, bars, LEVELS, events)
    setups = describe_setups(state, events, OPEN_NS)
    return events, state, setups.join(events.select(pl.col("event_id").alias("episode_id"), pl.col("dir_sign").alias("ev_sign"),
                                                      pl.col("attempt_index").alias("ev_attempt")), on="episode_id")


# ---------------------------------------------------------------------------------------------- T0


def t0_session() -> SessionInputs:
    """1-min bars 08:00–12:40 ET, each 100.0 ± 0.25 (ATR 0.5, band max(0.25, 0.125) = 0.25 pt).
    10:00 bar: high 102.0, close 101.5 (touch from below, closes short of the level).
    10:30 bar: high 102.6, close 102.4 (touch from below, closes 0.4 pt through the level).
    10:31 bar: 103.0–103.5, entirely above the band (price is now on the other side)."""
    starts = np.arange(at("08:00:00"), at("12:40:00"), 60 * S, dtype=np.int64)
    o, h, l, c = (np.full(len(starts), v) for v in (100.0, 100.25, 99.75, 100.0))
    for clock, (hi, lo, close) in {"10:00:00": (102.0, 99.75, 101.5), "10:30:00": (102.6, 99.75, 102.4),
                                   "10:31:00": (103.5, 103.0, 103.2)}.items():
        i = int(np.searchsorted(starts, at(clock)))
        h[i], l[i], c[i] = hi, lo, close
    ohlcv = pl.DataFrame({"ts_event": starts, "open": o, "high": h, "low": l, "close": c,
                          "volume": np.full(len(starts), 100, dtype=np.uint64)})
    return SessionInputs(session=SESSION, tier="T0", ohlcv_1m=ohlcv)


@pytest.fixture(scope="module")
def t0():
    return silver(t0_session())


def test_t0_anchors_sit_on_the_grid_and_do_not_count_themselves(t0):
    events, state, episodes = t0
    assert events["ts_ns"].to_list() == [at("10:01:00"), at("10:31:00")]  # stamped at the bars' closes
    assert events["attempt_index"].to_list() == [1, 2]
    first, second = episodes.sort("ts_ns").iter_rows(named=True)
    assert first["state_t_ns"] == first["ts_ns"]  # the grid row *at* the touch
    assert (first["attempt_index"], first["touches_today"]) == (1, 0)
    assert first["time_since_last_touch_s"] == pytest.approx(np.log1p(NEVER_TOUCHED_S))  # encoded "never"
    assert (second["attempt_index"], second["touches_today"]) == (2, 1)
    assert second["time_since_last_touch_s"] == pytest.approx(np.log1p(1800.0))  # 10:31 − 10:01
    assert [r["ev_attempt"] for r in (first, second)] == [1, 2]  # the episode agrees with its anchor
    # The state row at a touch's own time counts only earlier touches; the next row counts it.
    rows = state.filter(pl.col("t_ns").is_in([at("10:01:00"), at("10:01:30")])).sort("t_ns")
    assert rows["touches_today"].to_list() == [0.0, 1.0]
    assert rows["time_since_last_touch_s"].to_list() == [None, 30.0]


def test_t0_direction_and_distance_past_the_level(t0):
    _, state, episodes = t0
    first, second = episodes.sort("ts_ns").iter_rows(named=True)
    assert first["approach_sign"] == second["approach_sign"] == 1.0  # both came from below: UP
    assert [r["ev_sign"] for r in (first, second)] == [1, 1]
    atr_at = dict(state.filter(pl.col("t_ns").is_in([first["ts_ns"], second["ts_ns"]])).select("t_ns", "atr").iter_rows())
    # d_atr_toward = (close − L)/atr signed toward the level: short of it (−), through it (+).
    assert first["d_atr_toward"] == pytest.approx((101.5 - LEVEL) / atr_at[first["ts_ns"]])
    assert second["d_atr_toward"] == pytest.approx((102.4 - LEVEL) / atr_at[second["ts_ns"]]) and second["d_atr_toward"] > 0
    # d_atr alone cannot tell the second touch (above a level it approached from below) from a
    # price sitting above support; the row's dir_sign keeps the approach side, as its anchor does.
    row = state.filter(pl.col("t_ns") == second["ts_ns"]).row(0, named=True)
    assert row["d_atr"] > 0 and row["dir_sign"] == 1 and row["approach_sign"] == 1.0
    # ... so the toward-level kinematics of that row read the approach: (102.4 − 100.0)/10 min
    # moved *toward* (and through) the level, not away from a level below.
    assert second["approach_velocity"] == pytest.approx(0.24)
    # The touching bars' highs: 102.0 reaches the level exactly, 102.6 goes 0.6 pt through it.
    assert first["bar_reach_toward_atr"] == pytest.approx(0.0)
    assert second["bar_reach_toward_atr"] == pytest.approx(0.6 / atr_at[second["ts_ns"]])
    # One bar later price is entirely above the band: a touch now would come from above.
    later = state.filter(pl.col("t_ns") == at("10:32:00")).row(0, named=True)
    assert later["dir_sign"] == -1 and later["approach_sign"] == -1.0 and later["d_atr_toward"] < 0


# ---------------------------------------------------------------------------------------------- T1


def t1_session() -> SessionInputs:
    """Trades every 2 s from 08:00 ET alternating 100.00 / 100.25 (buyer / seller initiated).
    Touch 1: one print at 101.80 at 10:00:10. Touch 2: after a silence from 10:27:00 (no print
    at all), one print at 101.90 at 10:30:20. Otherwise price stays at 100."""
    ts = np.arange(at("08:00:00"), at("12:40:00"), 2 * S, dtype=np.int64)
    quiet = (ts >= at("10:27:00")) & (ts < at("10:30:20"))
    ts = np.sort(np.concatenate([ts[~quiet], [at("10:00:10") + S // 2, at("10:30:20")]]))
    i = np.arange(len(ts))
    px = np.where(i % 2 == 0, 100.0, 100.25)
    px[ts == at("10:00:10") + S // 2] = 101.80
    px[ts == at("10:30:20")] = 101.90
    trades = pl.DataFrame({"ts_event": ts, "price": px, "size": np.full(len(ts), 2, dtype=np.uint32),
                           "aggressor": np.where(i % 2 == 0, 1, -1).astype(np.int8)})
    return SessionInputs(session=SESSION, tier="T1", trades=trades)


@pytest.fixture(scope="module")
def t1():
    return silver(t1_session())


def test_t1_touch_history_is_measured_at_the_anchor(t1):
    events, _, episodes = t1
    assert events["ts_ns"].to_list() == [at("10:00:10") + S // 2, at("10:30:20")]
    first, second = episodes.sort("ts_ns").iter_rows(named=True)
    assert first["state_t_ns"] == at("10:00:00") and second["state_t_ns"] == at("10:30:00")
    assert (first["attempt_index"], first["touches_today"]) == (1, 0)
    assert first["time_since_last_touch_s"] == pytest.approx(np.log1p(NEVER_TOUCHED_S))
    assert (second["attempt_index"], second["touches_today"]) == (2, 1)
    # 10:30:20 − 10:00:10.5 = 1809.5 s: the anchor's own gap, not the grid row's 1789.5 s.
    assert second["time_since_last_touch_s"] == pytest.approx(np.log1p(1809.5))
    assert second["minutes_since_open"] == pytest.approx(60 + 20 / 60)  # aged to 10:30:20 too
    assert [r["approach_sign"] for r in (first, second)] == [1.0, 1.0]
    assert [r["ev_sign"] for r in (first, second)] == [1, 1]


def test_t1_distance_is_signed_by_the_anchors_direction():
    """The grid row precedes a T1 touch: price below the level at 10:00:00, gaps above the band
    at 10:00:04 (104.0) and touches it from above at 10:00:06 (102.1) — a DOWN anchor whose row
    still says UP. The episode's direction and signed distance are the anchor's."""
    inputs = t1_session()
    trades = inputs.trades.with_columns(
        pl.when(pl.col("ts_event") == at("10:00:04")).then(104.0)
        .when(pl.col("ts_event") == at("10:00:06")).then(102.1)
        .when(pl.col("ts_event") == at("10:00:10") + S // 2).then(100.0)
        .otherwise(pl.col("price")).alias("price"))
    events, state, episodes = silver(SessionInputs(session=SESSION, tier="T1", trades=trades))
    first = episodes.sort("ts_ns").row(0, named=True)
    assert (first["ts_ns"], first["direction"], first["state_t_ns"]) == (at("10:00:06"), "DOWN", at("10:00:00"))
    row = state.filter(pl.col("t_ns") == at("10:00:00")).row(0, named=True)
    assert row["dir_sign"] == 1 and row["d_atr"] < 0  # at the grid time price was below, coming up
    assert first["approach_sign"] == -1.0
    assert first["d_atr_toward"] == pytest.approx(-row["d_atr"])  # below a level tested from above: through it


def test_t1_anchor_state_reads_the_touch_itself():
    """silver/anchor_state evaluates the state at each anchor's own time: the second touch
    (10:30:20, after 3 min without prints) sees its own anchoring print in the 120 s flow
    window — which the 10:30:00 grid row cannot — yet still does not count itself as a touch."""
    inputs = t1_session()
    bars = build_bars(inputs)
    events = find_session_anchors(inputs, bars, LEVELS, StateConfig())
    rows = anchor_state(inputs, bars, LEVELS, events).sort("t_ns")
    assert rows["event_id"].to_list() == events.sort("ts_ns")["event_id"].to_list()
    assert rows["t_ns"].to_list() == [at("10:00:10") + S // 2, at("10:30:20")]
    second = rows.row(1, named=True)
    assert (second["attempt_index"], second["touches_today"]) == (2, 1)
    assert second["time_since_last_touch_s"] == pytest.approx(1809.5)
    # The window (10:28:20, 10:30:20] holds only the prints stamped 10:30:20 (the touch at 101.90
    # and the regular 2-s print), 2 lots each, one bought and one sold: imbalance 0, not null.
    at_touch = inputs.trades.filter(pl.col("ts_event") == at("10:30:20"))
    assert at_touch["aggressor"].sort().to_list() == [-1, 1]
    assert second["tape_imbalance_120s"] == 0.0 and second["tape_imbalance_toward_120s"] == 0.0
    assert second["buy_vol_120s"] == 2.0 and second["sell_vol_120s"] == 2.0
    grid = build_state(inputs, bars, LEVELS, events).filter(pl.col("t_ns") == at("10:30:00")).row(0, named=True)
    assert grid["tape_imbalance_120s"] is None and grid["buy_vol_120s"] == 0.0  # the grid row 20 s earlier: silence
    episode = describe_setups(build_state(inputs, bars, LEVELS, events), events, OPEN_NS, anchor_state=rows)
    assert episode.sort("ts_ns")["buy_vol_120s"].to_list()[1] == 2.0


def test_a_window_without_trades_is_encoded_not_missing(t1):
    _, state, episodes = t1
    silent = state.filter(pl.col("t_ns") == at("10:30:00")).row(0, named=True)
    # 3 minutes without a print: no imbalance, no measurable slope — null in silver...
    for name in ("tape_imbalance_30s", "tape_imbalance_60s", "tape_imbalance_120s", "trade_velocity_60s",
                 "trade_velocity_toward_60s", "tape_near_imbalance_toward_60s"):
        assert silent[name] is None, name
    assert silent["buy_vol_120s"] == 0.0 and silent["sell_vol_120s"] == 0.0  # genuine zeros, not nulls
    # ... and the declared "no such event" value in the vector of the touch that ends the silence.
    second = episodes.sort("ts_ns").row(1, named=True)
    for name in ("tape_imbalance_30s", "tape_imbalance_60s", "tape_imbalance_120s", "trade_velocity_60s",
                 "trade_velocity_toward_60s", "tape_near_imbalance_toward_60s"):
        assert second[name] == MISSING_MEANS[name] == 0.0, name
    assert missing_vector_values(episodes.drop("ev_sign", "ev_attempt")) == {}


@pytest.mark.parametrize("session", ["t0", "t1"])
def test_every_null_silver_writes_is_a_declared_no_event_null(session, request):
    """Walk the state's columns: any feature of the session's tier that is null somewhere must
    declare `missing` in the registry (a gap in the data would be a bug in this clean session)."""
    _, state, _ = request.getfixturevalue(session)
    tier = state["tier"][0]
    undeclared = [f.name for f in registry.all_features()
                  if tier_rank(f.tier) <= tier_rank(tier) and state[f.name].null_count() and not f.nullable]
    assert undeclared == []


# ---------------------------------------------------------------------------------------- registry


def test_every_nullable_vector_source_has_an_encoding():
    """A nullable feature that feeds the vector (directly or through micro-history/trajectory)
    must say what its null means; the encoding table is built from the registry alone."""
    sources = {d.source for d in vector_layout()} | set(KEY_SERIES)
    nullable = {f.name: f for f in registry.all_features() if f.nullable}
    without = sorted(name for name in sources if name in nullable and nullable[name].missing.means is None)
    assert without == []
    assert set(MISSING_MEANS) == {n for n, f in nullable.items() if f.missing.means is not None}
    for f in nullable.values():
        assert f.missing.when.strip(), f"{f.name}: say when it is null"
    # The tape features that stopped a 40-session run have one now.
    assert {"tape_imbalance_30s", "trade_velocity_60s", "trade_velocity_toward_60s"} <= set(MISSING_MEANS)


def test_direction_features_are_registered_with_trader_names():
    layout = {d.name: d for d in vector_layout()}
    for name in ("approach_sign", "d_atr_toward", "bar_reach_toward_atr"):
        assert layout[name].section == "context" and layout[name].tier == "T0"
        assert layout[name].normalization == "robust_z" and layout[name].meaning
    assert layout["d_atr_toward"].driver == "how far through the level"
    assert layout["d_atr"].driver == "distance to the level"
    assert set(AGES_WITH_CLOCK) <= set(layout)


def test_debounce_shorter_than_the_grid_step_is_refused():
    with pytest.raises(ValueError, match="debounce"):
        StateConfig(grid_step_s=30, touch=TouchConfig(debounce_s=10))
