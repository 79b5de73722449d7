"""The incremental engine equals batch: state rows, streams, alerts and signals, at every tier.

The synthetic lake (two T3 sessions through the whole graph) gives the batch assets; tiers
T0–T2 are the same session with the higher tiers' tables withheld, compared with `build_state`
on the same withheld inputs (the batch computation). The real 2013 ES bars (T0) go through the
daily job and the engine alike.
"""

import datetime as dt

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from spymaster_assets.gold.as_of import query_answer
from spymaster_assets.lake import Lake
from spymaster_assets.lib.calendar import et_to_ns, ns_to_et, session_window
from spymaster_assets.lib.features import liquidity
from spymaster_assets.lib.live_window import book_window_s, trailing, window_seconds
from spymaster_assets.lib.state import StateConfig, build_bars, build_levels, build_state, find_session_anchors
from spymaster_assets.lib.stream_alerts import compute_alerts
from spymaster_assets.lib.tiers import tier_rank
from spymaster_assets.live import messages
from spymaster_assets.live.analogs import SessionArtifacts, analog_path, bucket_of
from spymaster_assets.live.engine import EngineReplaySource, LiveEngine, run
from spymaster_assets.live.replay import Replay, SessionData, read_session
from spymaster_assets.ml.serving import model_answer
from spymaster_assets.silver.inputs import BOOK_LOOKBACK_MIN, load_session_inputs
from spymaster_assets_tests.conftest import SYNTHETIC_SESSIONS
from spymaster_assets_tests.test_ml_assets import built  # noqa: F401  (the fixture: as-of models over 16 sessions)

pytestmark = pytest.mark.slow
DAY = dt.date.fromisoformat(SYNTHETIC_SESSIONS[1])  # the second session: the first one's as-of artifacts serve it
TOL = {"check_dtypes": False, "rel_tol": 1e-9, "abs_tol": 1e-9}


@pytest.fixture(scope="module")
def lake(synthetic_home) -> Lake:
    return Lake(synthetic_home / "lake")


@pytest.fixture(scope="module")
def replayed(lake):
    """The T3 session replayed from 09:22 to 10:20 with every artifact, as the server runs it."""
    data = read_session(lake, DAY)
    engine = LiveEngine(data, SessionArtifacts.load(lake, DAY))
    sent = list(run(Replay(data, speed=0, end=dt.time(10, 20)), engine))
    return engine, sent


def test_every_message_is_valid_for_the_contract(replayed):
    _, sent = replayed
    kinds = {m.type for m in sent}
    assert {"candle", "stream_update", "alert", "level_signal"} <= kinds
    for message in sent:
        messages.validate_outgoing(message)
    assert [m.ts_ns for m in sent] == sorted(m.ts_ns for m in sent)


def test_state_rows_equal_the_batch_silver_state(lake, replayed):
    engine, _ = replayed
    last = et_to_ns(DAY, dt.time(10, 20))
    batch = lake.read("silver", "state", DAY).filter(pl.col("t_ns") <= last)
    assert batch.height > 300 and batch["tier"].unique().to_list() == ["T3"]
    assert engine.state.columns == batch.columns
    assert_frame_equal(engine.state, batch, **TOL)


def test_streams_and_alerts_equal_the_batch_gold_assets(lake, replayed):
    engine, sent = replayed
    last = engine.state["t_ns"].max()
    streams = lake.read("gold", "streams", DAY).filter(pl.col("t_ns") <= last)
    assert_frame_equal(engine.streams.select(streams.columns), streams, **TOL)
    alerts = lake.read("gold", "alerts", DAY).filter(pl.col("t_ns") <= last)
    onsets = alerts.filter("onset").select("t_ns", "level_kind", "alert").sort("t_ns", "level_kind", "alert").rows()
    fired = sorted((m.ts_ns, m.level_kind, m.alert) for m in sent if m.type == "alert" and m.state == "fired")
    assert fired == onsets and fired
    # A cleared alert is one active at the previous bar of its level and not at this one.
    active = set(alerts.select("t_ns", "level_kind", "alert").rows())
    for m in (m for m in sent if m.type == "alert" and m.state == "cleared"):
        assert (m.ts_ns, m.level_kind, m.alert) not in active and (m.ts_ns - 30_000_000_000, m.level_kind, m.alert) in active


def test_stream_updates_carry_the_batch_rows(lake, replayed):
    _, sent = replayed
    streams = lake.read("gold", "streams", DAY)
    updates = [m for m in sent if m.type == "stream_update"]
    assert len(updates) == len([r for r in streams.filter(pl.col("t_ns") <= updates[-1].ts_ns).iter_rows()])
    for u in updates[::37]:
        row = streams.filter((pl.col("t_ns") == u.ts_ns) & (pl.col("level_kind") == u.level_kind)).row(0, named=True)
        for name, value in u.streams.items():
            assert value == pytest.approx(row[name], abs=1e-12) if row[name] is not None else value is None


def test_level_signals_answer_what_query_answer_and_model_answer_say(lake, replayed):
    engine, sent = replayed
    signals = [m for m in sent if m.type == "level_signal" and m.approach_state == "active"]
    assert signals, "the session has approaches"
    state = engine.state
    in_approach = set(state.filter("in_approach").select("t_ns", "level_kind").rows())
    assert {(s.ts_ns, s.level.kind) for s in signals} == in_approach
    for s in signals[:: max(1, len(signals) // 6)]:
        clock = ns_to_et(s.ts_ns).time()
        batch = query_answer(lake, DAY, clock, s.level.kind)
        assert s.level.direction == batch["direction"] and s.context["time_bucket"] == batch["time_bucket"]
        assert s.retrieval is not None
        for outcome, p in batch["retrieval"]["probabilities"].items():
            assert s.retrieval.probabilities[outcome] == pytest.approx(p, abs=1e-12)
        assert s.retrieval.effective_n == pytest.approx(batch["retrieval"]["effective_n"])
        assert list(s.retrieval.p_break_interval) == pytest.approx(batch["retrieval"]["p_break_interval"])
        expected_model = model_answer(lake, DAY, clock, s.level.kind)
        if expected_model is None or "prediction" not in expected_model:
            assert s.model is None and s.drivers == {"break": [], "reject": []}
        else:
            assert s.model.p_break == pytest.approx(expected_model["prediction"]["p_break"])
        # Analogs are the answer's nearest neighbours, all from earlier sessions, drawn through the touch.
        neighbours = batch["retrieval"]["neighbours"]
        assert [a.session.isoformat() for a in s.analogs] == [n["session"] for n in neighbours[: len(s.analogs)]]
        assert all(a.session < DAY for a in s.analogs) and s.analogs
        assert s.trust.index_as_of < DAY


def test_smoothed_p_is_an_ewma_over_the_approach_and_resets(replayed):
    _, sent = replayed
    by_approach: dict[str, list] = {}
    for m in sent:
        if m.type == "level_signal":
            by_approach.setdefault(m.approach_id, []).append(m)
    for approach_id, seq in by_approach.items():
        active = [s for s in seq if s.approach_state == "active"]
        assert active[0].smoothed == pytest.approx(active[0].retrieval.probabilities)  # first query shown as is
        retain = 0.5 ** (1 / 4.0)
        expected = np.array([active[0].retrieval.probabilities[o] for o in ("BREAK", "REJECT", "CHOP")])
        for s in active[1:]:
            latest = np.array([s.retrieval.probabilities[o] for o in ("BREAK", "REJECT", "CHOP")])
            expected = retain * expected + (1 - retain) * latest
            assert [s.smoothed[o] for o in ("BREAK", "REJECT", "CHOP")] == pytest.approx(expected.tolist())
        assert sum(s.approach_state == "ended" for s in seq) <= 1
    assert any(s.approach_state == "ended" for seq in by_approach.values() for s in seq)


def test_candles_are_the_batch_two_minute_bars(lake, replayed):
    _, sent = replayed
    bars = lake.read("silver", "bars_2m", DAY)
    final = [m for m in sent if m.type == "candle" and m.final]
    # The first message brings the closed bars since 04:00 ET (context for the chart), then bars close live.
    history = [c for c in final if c.ts_ns <= et_to_ns(DAY, dt.time(9, 22, 30))]
    assert history[0].time_et == "04:02:00" and history[-1].time_et == "09:22:00"
    assert [c.bar_start_ns for c in history] == bars.filter(pl.col("bar_start_ns").is_between(
        et_to_ns(DAY, dt.time(4, 0)), et_to_ns(DAY, dt.time(9, 20))))["bar_start_ns"].to_list()
    assert [c.time_et for c in final if c not in history][0] == "09:24:00"
    for c in final:
        bar = bars.filter(pl.col("bar_start_ns") == c.bar_start_ns).row(0, named=True)
        assert (c.open, c.high, c.low, c.close, c.volume) == (bar["open"], bar["high"], bar["low"], bar["close"], bar["volume"])
    levels = {line.kind: line.price for line in final[-1].levels}
    assert levels["PM_HIGH"] is not None and levels["OR_LOW"] is not None


def withheld(data: SessionData, tier: str) -> SessionData:
    """The session as if only `tier`'s schemas had been bought."""
    from spymaster_assets.live.replay import STREAMED_TABLES

    keep = {t.table for t in STREAMED_TABLES if tier_rank(t.tier) <= tier_rank(tier)}
    return SessionData(data.session, tier, {k: v for k, v in data.tables.items() if k in keep},
                       data.options_reference if tier == "T3" else None, data.warmup_bars_2m)


def batch_state(lake, tier: str) -> pl.DataFrame:
    inputs = load_session_inputs(lake, DAY)
    inputs.tier = tier
    if tier_rank(tier) < tier_rank("T1"):
        inputs.trades = None
    if tier_rank(tier) < tier_rank("T2"):
        inputs.book = None
    if tier_rank(tier) < tier_rank("T3"):
        inputs.options = None
    bars = build_bars(inputs)
    levels = build_levels(inputs, bars)
    events = find_session_anchors(inputs, bars, levels, StateConfig())
    return build_state(inputs, bars, levels, events)


@pytest.mark.parametrize("tier", ["T0", "T1", "T2"])
def test_state_rows_equal_batch_at_every_lower_tier(lake, tier):
    end = dt.time(10, 0)
    data = withheld(read_session(lake, DAY), tier)
    engine = LiveEngine(data)  # state only: no artifacts, no messages
    list(run(Replay(data, speed=0, end=end), engine))
    expected = batch_state(lake, tier).filter(pl.col("t_ns") <= et_to_ns(DAY, end))
    assert expected["tier"].unique().to_list() == [tier] and expected.height > 100
    assert_frame_equal(engine.state, expected, **TOL)


def test_warm_up_emits_nothing_before_the_start_yet_keeps_every_row(lake):
    data = withheld(read_session(lake, DAY), "T0")
    engine = LiveEngine(data, SessionArtifacts.load(lake, DAY))
    start = dt.time(9, 50)
    sent = list(run(Replay(data, speed=0, start=start, end=dt.time(10, 0)), engine))
    start_ns = et_to_ns(DAY, start)
    live = [m for m in sent if not (m.type == "candle" and m.final and m.ts_ns <= start_ns)]
    assert live and min(m.ts_ns for m in live) > start_ns and {m.type for m in live} >= {"stream_update", "candle"}
    # What precedes the start is only the chart's context: closed bars, sent first, with the first live message.
    assert sent[: len(sent) - len(live)] == [m for m in sent if m not in live]
    assert engine.state["t_ns"].min() == session_window(DAY).rth_open_ns  # 09:30 onwards, though silent


def test_the_book_window_covers_every_book_feature_and_the_batch_span():
    w = book_window_s()
    assert w >= liquidity.max_lookback_s() and w % 30 == 0
    assert w <= BOOK_LOOKBACK_MIN * 60  # the batch reads the book from 35 min before the open: same data
    assert window_seconds("30min") == 1800 and window_seconds("14 x 1min") == 840 and window_seconds("-") is None
    frame = pl.DataFrame({"ts_event": [1, 2, 3, 4, 5], "instrument_id": [1, 2, 1, 2, 1]})
    assert trailing(frame, 4)["ts_event"].to_list() == [3, 4, 5]
    assert trailing(frame, 4, by="instrument_id")["ts_event"].to_list() == [2, 3, 4, 5]


def test_analog_path_is_in_atr_units_toward_the_level():
    ns = 60_000_000_000
    bars = pl.DataFrame({"bar_end_ns": [ns * i for i in range(1, 31)], "close": [100.0 + i for i in range(30)],
                         "atr": [2.0] * 30})
    path, atr = analog_path(bars, touch_ns=15 * ns, level_price=114.0, dir_sign=-1)
    assert atr == 2.0 and len(path) == 21
    assert path[10] == 0.0  # at the touch the close (114) is on the level
    assert path[11] == pytest.approx(-0.5)  # a DOWN approach: price rising is away from "through"
    assert path[0] == pytest.approx(5.0) and bucket_of(0.63) == (0.6, "0.6–0.7") and bucket_of(1.0)[1] == "0.9–1.0"


def test_replay_source_lists_sessions_with_artifacts_and_replays(lake):
    source = EngineReplaySource(lake)
    assert source.sessions() == [dt.date.fromisoformat(d) for d in SYNTHETIC_SESSIONS]
    stream = source.replay(DAY, 0, dt.time(9, 29))
    first = [next(stream) for _ in range(2)]
    stream.close()
    assert all(m.type == "candle" for m in first) and first[0].time_et == "04:02:00"


@pytest.fixture(scope="module")
def real_t0_lake(fixtures, tmp_path_factory) -> Lake:
    """Two real 2013 ES sessions of 1-min bars (tier T0) through the daily job."""
    import dagster as dg

    from spymaster_assets.definitions import build_definitions
    from spymaster_assets_tests.helpers import resources_for, run_range

    home = tmp_path_factory.mktemp("real_t0")
    defs = build_definitions(resources_for(home, source="local", local_dir=str(fixtures / "real-es-ohlcv-1m")))
    with dg.instance_for_test() as instance:
        result = run_range(defs, "2013-10-09", "2013-10-10", instance)
        assert result.success, [e.message for e in result.all_events if e.is_failure][:3]
    return Lake(home / "lake")


def test_real_t0_session_replays_equal_to_batch(real_t0_lake):
    lake, day = real_t0_lake, dt.date(2013, 10, 10)
    data = read_session(lake, day)
    assert data.tier == "T0" and list(data.tables) == ["futures_ohlcv_1m"]
    engine = LiveEngine(data, SessionArtifacts.load(lake, day))
    sent = list(run(Replay(data, speed=0), engine))
    assert_frame_equal(engine.state, lake.read("silver", "state", day), **TOL)
    streams = lake.read("gold", "streams", day)
    assert_frame_equal(engine.streams.select(streams.columns), streams, **TOL)
    signals = [m for m in sent if m.type == "level_signal" and m.approach_state == "active"]
    assert {(s.ts_ns, s.level.kind) for s in signals} == set(engine.state.filter("in_approach").select("t_ns", "level_kind").rows())
    for s in signals[:: max(1, len(signals) // 4)]:
        batch = query_answer(lake, day, ns_to_et(s.ts_ns).time(), s.level.kind)
        if batch.get("retrieval") is None:
            assert s.retrieval is None
        else:
            assert s.retrieval.probabilities["BREAK"] == pytest.approx(batch["retrieval"]["probabilities"]["BREAK"], abs=1e-12)


def test_model_answer_and_trust_come_from_the_as_of_model_and_earlier_predictions(built):
    from spymaster_assets.lib.calendar import sessions_before
    from spymaster_assets.live.analogs import TrustTable
    from spymaster_assets.ml.model_store import load_model
    from spymaster_assets.ml.serving import ServingModel, explain_setups
    from spymaster_assets.ml.training import read_window
    from spymaster_assets_tests.test_ml_assets import SESSIONS as ML_SESSIONS

    _, lake, _ = built
    session = ML_SESSIONS[-1]
    served = ServingModel.load(lake, session)
    setup = lake.read("gold", "episodes", session)[:1]
    answer = served.answer(setup, dt.time(10, 0), setup["level_kind"][0])
    predictor, _, provenance = load_model(lake, session)
    window = read_window(lake, [d for d in lake.partitions("gold", "episodes")
                                if provenance["trained_on_first"] <= d <= provenance["trained_on_last"]])
    assert answer["prediction"] == explain_setups(predictor, setup, window)[0]["prediction"]
    assert answer["trained_on_last"] < str(session)
    # Trust: the realised BREAK share of the decisive earlier predictions in the answer's 0.1 bucket.
    p = answer["prediction"]["p_break"]
    earlier = [lake.read("ml", "break_predictions", d) for d in ML_SESSIONS if d < session]
    scored = pl.concat(earlier).filter(pl.col("label").is_in(["BREAK", "REJECT"]))
    p_dec, hit = scored["p_break_decisive"].to_numpy(), (scored["label"] == "BREAK").to_numpy()
    in_bucket = np.minimum(np.floor(p_dec * 10), 9) == min(np.floor(p * 10), 9)
    trust = TrustTable.load(lake, session).trust(p, None, dt.date.fromisoformat(answer["model_as_of"]))
    assert trust.bucket_n == int(in_bucket.sum()) > 0
    assert trust.bucket_hit_rate == pytest.approx(hit[in_bucket].mean())
    assert all(d < session for d in sessions_before(session, 250))


def test_projection_updates_are_the_as_of_projectors_paths_at_t():
    from spymaster_assets.lib import stream_projections as P
    from spymaster_assets.live.engine import project
    from spymaster_assets_tests.test_stream_projections import BAR_NS, T0_NS, mean_reverting_streams

    history = mean_reverting_streams(sessions=6)
    projector = P.StreamProjector.fit(P.projection_samples(history, "sigma_p"), "sigma_p", P.ProjectionConfig(n_estimators=20))
    today = mean_reverting_streams(sessions=1, seed=9)
    t = T0_NS + 40 * BAR_NS
    projected = project(P.ProjectionModels({"sigma_p": projector}), today.filter(pl.col("t_ns") <= t), t)
    assert set(projected) == {"OR_HIGH", "PM_LOW"}
    samples = P.projection_samples(today, "sigma_p", with_targets=False).filter(pl.col("t_ns") == t)
    expected = projector.paths(samples)
    for i, kind in enumerate(samples["level_kind"].to_list()):
        band = projected[kind]["sigma_p"]
        assert band.q10 == pytest.approx(expected[i, 0].tolist()) and band.q90 == pytest.approx(expected[i, 2].tolist())
        assert len(band.q50) == P.HORIZON and all(lo <= mid <= hi for lo, mid, hi in zip(band.q10, band.q50, band.q90))
    assert project(P.ProjectionModels({"sigma_p": projector}), today, T0_NS + 3 * BAR_NS) == {}  # no full look-back yet: nothing projected


def test_the_server_replays_the_engine_over_the_websocket_with_the_query_api_beside_it(lake):
    """What `spymaster live` serves: the real engine behind the real server; a client asks for a replay and gets
    the session's frames, each valid, and the warm query endpoint answers on the same server."""
    import jsonschema
    from starlette.testclient import TestClient

    from spymaster_assets.live.query_api import query_routes
    from spymaster_assets.live.server import create_app

    validator = jsonschema.Draft202012Validator(messages.message_json_schema()["server"])
    app = create_app(EngineReplaySource(lake), extra_routes=query_routes(lake))
    seen: dict[str, int] = {}
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        assert ws.receive_json()["type"] == "snapshot"
        ws.send_json({"type": "replay", "session": DAY.isoformat(), "speed": 0, "start": "09:45"})
        for _ in range(20_000):
            frame = ws.receive_json()
            validator.validate(frame)
            assert frame["type"] != "error", frame
            seen[frame["type"]] = seen.get(frame["type"], 0) + 1
            if frame["type"] == "stream_update" and frame["time_et"] >= "09:50:00":
                break
            assert not (frame["type"] == "status" and seen.get("candle") and not frame["running"]), seen
        answer = client.get("/api/query", params={"date": DAY.isoformat(), "time": "09:50", "level": "PM_HIGH"})
    assert seen.get("candle", 0) > 0 and seen.get("stream_update", 0) > 0 and "error" not in seen
    assert answer.status_code == 200 and answer.json()["level_kind"] == "PM_HIGH"


def test_the_documented_schema_file_is_the_contract():
    import json
    from pathlib import Path

    documented = Path(__file__).resolve().parents[1] / "docs" / "live_messages.schema.json"
    assert json.loads(documented.read_text()) == messages.message_json_schema(), \
        "docs/live_messages.schema.json is stale: regenerate it with `spymaster live --schema > docs/live_messages.schema.json`"
