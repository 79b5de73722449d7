"""The live server's contract: frames validated on send, malformed client frames answered and survived, the current
state on (re)connect, replays restartable, and a client that never reads blocks neither the engine nor others."""

import datetime as dt
import json
import socket
import threading
import time

import httpx
import jsonschema
import pytest
import websockets.sync.client
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from spymaster_assets.live.messages import Candle, LevelLine, message_json_schema, validate_outgoing
from spymaster_assets.live.recorded import RecordedLogError, RecordedReplaySource, read_log, write_log
from spymaster_assets.live.server import ClientOutbox, _Item, create_app
from spymaster_assets_tests.live_support import SESSION, serving, session_frames

SHORT = dt.time(10, 15)  # 09:22–10:15: every frame type, approaches and alerts, in well under a second of replay


@pytest.fixture(scope="module")
def frames():
    return session_frames(end=SHORT)


@pytest.fixture
def log_path(tmp_path, frames):
    path = tmp_path / "session.jsonl"
    write_log(path, frames)
    return path


def replay_request(speed=0, session=SESSION, start="09:22"):
    return json.dumps({"type": "replay", "session": str(session), "speed": speed, "start": start})


def read_until_replay_ends(ws, limit=100_000):
    """Every frame up to and including the status that says the replay stopped."""
    received = []
    for _ in range(limit):
        frame = ws.receive_json()
        received.append(frame)
        if frame["type"] == "status" and not frame["running"]:
            return received
    raise AssertionError("the replay never ended")


def expected_state(frames):
    """What a client joining after `frames` must be shown, derived independently of the server's own folding."""
    candles, latest, alerts = {}, {}, []
    for f in frames:
        if f.type == "candle":
            candles[f.bar_start_ns] = f
        elif f.type == "alert":
            alerts.append(f)
        else:
            latest[(f.type, f.level.kind if f.type == "level_signal" else f.level_kind)] = f
    dump = lambda items: [json.loads(validate_outgoing(m)) for m in items]  # noqa: E731
    return dump(candles.values()), sorted(map(json.dumps, dump(latest.values()))), dump(alerts)


def expected_stream_history(frames, bars=120):
    """The last `bars` stream updates of each level, oldest first, without their state rows."""
    per_level = {}
    for f in frames:
        if f.type == "stream_update":
            per_level.setdefault(f.level_kind, []).append(f)
    recent = sorted((u for rows in per_level.values() for u in rows[-bars:]), key=lambda u: (u.ts_ns, u.level_kind))
    return [json.loads(validate_outgoing(u.model_copy(update={"state": {}}))) for u in recent]


def test_a_replay_sends_every_engine_frame_in_order_each_one_valid_against_the_documented_schema(log_path, frames):
    validator = jsonschema.Draft202012Validator(message_json_schema()["server"])
    app = create_app(RecordedReplaySource(log_path), queue_capacity=100_000)  # every frame: no drops even under load
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        hello = ws.receive_json()
        assert hello["type"] == "snapshot" and hello["status"]["sessions"] == [str(SESSION)]
        assert hello["status"]["running"] is False and hello["candles"] == []
        ws.send_text(replay_request())
        received = read_until_replay_ends(ws)
    assert received[0]["type"] == "snapshot" and received[0]["status"]["running"] is True
    engine = [f for f in received[1:] if f["type"] not in ("status",)]
    assert engine == [json.loads(validate_outgoing(f)) for f in frames]
    per_type = {}
    for frame in received:  # the documented schema agrees with what is sent (a sample per type: jsonschema is slow)
        if per_type.setdefault(frame["type"], 0) < 20:
            per_type[frame["type"]] += 1
            validator.validate(frame)
    assert set(per_type) == {"snapshot", "status", "candle", "stream_update", "projection_update", "alert",
                             "level_signal"}
    assert received[-1]["replay_time_et"] == "10:15:00" and received[-1]["dropped_frames"] == 0


def test_an_invalid_engine_frame_is_not_sent_but_reported_and_the_replay_goes_on(frames):
    bad = Candle.model_construct(**{**frames[0].model_dump(), "levels": [LevelLine.model_construct(kind="VWAP", price=1.0)]})

    class Source:
        def sessions(self):
            return [SESSION]

        def replay(self, session, speed, start):
            yield frames[0]
            yield bad
            yield frames[1]

    app = create_app(Source())
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_text(replay_request())
        received = read_until_replay_ends(ws)
        assert app.state.hub.invalid_frames == 1
    kinds = [(f["type"], f.get("error")) for f in received[1:-1] if f["type"] != "status"]
    assert kinds == [("candle", None), ("error", "invalid engine frame not sent"), ("candle", None)]
    error = next(f for f in received if f["type"] == "error")
    assert error["detail"].startswith("candle.levels.0.kind: Input should be 'PM_HIGH'")


@pytest.mark.parametrize("bad, error", [
    ("not json", "malformed client frame"),
    ('{"type": "subscribe"}', "malformed client frame"),
    ('{"type": "replay", "session": "2024-09-03", "speed": -1}', "malformed client frame"),
    ('{"type": "replay", "session": "2024-09-03", "speed": 1, "start": "25:00"}', "bad replay start"),
    ('{"type": "replay", "session": "2031-01-02", "speed": 0}', "unknown session"),
    (b"\xff\xfe", "malformed client frame"),
])
def test_a_malformed_client_frame_gets_an_error_frame_and_the_connection_stays_usable(log_path, bad, error):
    with TestClient(create_app(RecordedReplaySource(log_path))) as client, client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_bytes(bad) if isinstance(bad, bytes) else ws.send_text(bad)
        answer = ws.receive_json()
        assert answer["type"] == "error" and answer["error"] == error and answer["detail"]
        ws.send_text('{"type": "ping"}')
        assert ws.receive_json()["type"] == "status"
        ws.send_text(replay_request())
        assert ws.receive_json()["type"] == "snapshot"


def test_a_client_joining_mid_replay_gets_the_state_so_far_then_exactly_the_frames_after_it(frames):
    half = len(frames) // 2
    gate = threading.Event()

    class GatedSource:  # yields half the session, then waits until the second client has joined
        def sessions(self):
            return [SESSION]

        def replay(self, session, speed, start):
            yield from frames[:half]
            gate.wait(10)
            yield from frames[half:]

    app = create_app(GatedSource(), queue_capacity=100_000)
    with TestClient(app) as client, client.websocket_connect("/ws") as first:
        first.receive_json()
        first.send_text(replay_request())
        first.receive_json()
        for _ in range(half):
            assert first.receive_json()["type"] in ("candle", "stream_update", "projection_update", "alert",
                                                    "level_signal", "status")
        while app.state.hub.engine_frames < half:
            time.sleep(0.01)
        with client.websocket_connect("/ws") as second:
            snapshot = second.receive_json()
            gate.set()
            rest = read_until_replay_ends(second)
    assert snapshot["type"] == "snapshot" and snapshot["status"]["running"] is True
    candles, latest, alerts = expected_state(frames[:half])
    assert snapshot["candles"] == candles and snapshot["alerts"] == alerts
    assert sorted(map(json.dumps, snapshot["latest"])) == latest
    assert snapshot["streams"] == expected_stream_history(frames[:half]) and snapshot["streams"]
    assert [f for f in rest if f["type"] != "status"] == [json.loads(validate_outgoing(f)) for f in frames[half:]]


def test_reconnecting_after_the_replay_gets_the_final_state(log_path, frames):
    with TestClient(create_app(RecordedReplaySource(log_path))) as client:
        with client.websocket_connect("/ws") as ws:
            ws.receive_json()
            ws.send_text(replay_request())
            read_until_replay_ends(ws)
        with client.websocket_connect("/ws") as again:
            snapshot = again.receive_json()
    candles, latest, alerts = expected_state(frames)
    assert snapshot["status"]["running"] is False and snapshot["status"]["replay_time_et"] == "10:15:00"
    assert snapshot["candles"] == candles and snapshot["alerts"] == alerts
    assert sorted(map(json.dumps, snapshot["latest"])) == latest
    finals = [c["final"] for c in snapshot["candles"]]
    assert finals == [True] * (len(finals) - 1) + [False]  # the 10:14 bar is still forming at 10:15


def test_a_new_replay_request_closes_the_old_iterator_and_starts_afresh(frames):
    closed = threading.Event()
    started = []

    class SlowSource:
        def sessions(self):
            return [SESSION, SESSION + dt.timedelta(days=1)]

        def replay(self, session, speed, start):
            started.append((session, speed, start))
            try:
                for frame in frames:
                    yield frame.model_copy(update={"session": session})
                    time.sleep(0.01 if session == SESSION else 0)
            finally:
                if session == SESSION:
                    closed.set()

    app = create_app(SlowSource())
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_text(replay_request(speed=1))
        assert ws.receive_json()["status"]["session"] == str(SESSION)
        assert ws.receive_json()["session"] == str(SESSION)
        ws.send_text(replay_request(speed=0, session=SESSION + dt.timedelta(days=1), start="09:40"))
        assert closed.wait(5), "the first replay's iterator was not closed"
        tail = read_until_replay_ends(ws)
    fresh = [i for i, f in enumerate(tail) if f["type"] == "snapshot"]
    assert len(fresh) == 1 and tail[fresh[0]]["status"]["session"] == "2024-09-04" and tail[fresh[0]]["candles"] == []
    assert {f["session"] for f in tail[fresh[0] + 1:] if "session" in f and f["type"] != "status"} == {"2024-09-04"}
    assert started == [(SESSION, 1.0, dt.time(9, 22)), (SESSION + dt.timedelta(days=1), 0.0, dt.time(9, 40))]


def test_outbox_drop_policy_drops_superseded_frames_first_then_resyncs_with_a_snapshot():
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        outbox = ClientOutbox(loop, capacity=3)
        outbox.offer(_Item("final-candle", droppable=False))
        outbox.offer(_Item("stream-1", droppable=True))
        outbox.offer(_Item("alert", droppable=False))
        outbox.offer(_Item("stream-2", droppable=True))  # full: the oldest droppable (stream-1) goes
        assert [i.payload for i in outbox._items] == ["final-candle", "alert", "stream-2"] and outbox.dropped == 1
        outbox.offer(_Item("signal-end", droppable=False))  # stream-2 goes
        outbox.offer(_Item("final-candle-2", droppable=False), resync="SNAPSHOT")  # nothing droppable: resync
        assert [i.payload for i in outbox._items] == ["SNAPSHOT", "final-candle-2"] and outbox.dropped == 5
    finally:
        loop.close()


def _stalled_client(url: str):
    """A WebSocket client with a tiny receive buffer that never reads: the server's sends to it back up."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    return websockets.sync.client.connect(url.replace("http", "ws") + "/ws", sock=sock, max_queue=1, max_size=None)


def test_a_client_that_never_reads_blocks_neither_the_engine_nor_other_clients_and_its_drops_are_counted(tmp_path):
    frames = session_frames()  # the whole session, ~8 MB: far more than the stalled client's socket can hold
    log = tmp_path / "session.jsonl"
    write_log(log, frames)
    app = create_app(RecordedReplaySource(log), queue_capacity=64)
    with serving(app) as url:
        stalled = _stalled_client(url)
        with websockets.sync.client.connect(url.replace("http", "ws") + "/ws", max_size=None) as reader:
            json.loads(reader.recv())
            reader.send(replay_request())
            began = time.monotonic()
            received = []
            while not received or received[-1]["type"] != "status" or received[-1]["running"]:
                received.append(json.loads(reader.recv(timeout=60)))
            replay_s = time.monotonic() - began
            status = httpx.get(url + "/api/status").json()
        hub = app.state.hub
        stalled_outbox = max(hub._clients, key=lambda c: c.dropped)  # the reader may drop a few too, never as many
        assert stalled_outbox.dropped > 100 and len(stalled_outbox) <= 64
        assert status["status"]["dropped_frames"] >= stalled_outbox.dropped and status["clients"] == 2
        # the reading client kept every frame that must not be lost: each final candle arrived (or a resync had it)
        finals = {f.bar_start_ns for f in frames if f.type == "candle" and f.final}
        seen = {c["bar_start_ns"] for f in received if f["type"] == "snapshot" for c in f["candles"] if c["final"]}
        seen |= {f["bar_start_ns"] for f in received if f["type"] == "candle" and f["final"]}
        assert seen == finals
        assert replay_s < 60
        # the stalled client, once it reads, is told how many frames it missed
        stalled.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        last = None
        while last is None or last["type"] != "status" or last["running"]:
            last = json.loads(stalled.recv(timeout=30))
        assert last["dropped_frames"] == stalled_outbox.dropped
        stalled.close()


def test_http_endpoints_and_extra_routes(log_path):
    extra = [Route("/api/daily/ping", lambda request: PlainTextResponse("daily"))]
    with TestClient(create_app(RecordedReplaySource(log_path), extra_routes=extra)) as client:
        assert client.get("/healthz").text == "ok"
        assert client.get("/api/schema").json() == json.loads(json.dumps(message_json_schema()))
        status = client.get("/api/status").json()
        assert status["status"]["sessions"] == [str(SESSION)] and status["clients"] == 0
        page = client.get("/")
        assert page.status_code == 200 and "app.js" in page.text
        vendor = client.get("/static/vendor/lightweight-charts.standalone.production.mjs")
        assert vendor.status_code == 200 and "javascript" in vendor.headers["content-type"]
        assert client.get("/api/daily/ping").text == "daily"


def test_recorded_logs_replay_from_the_start_clock_at_speed_and_reject_bad_lines(tmp_path, log_path, frames):
    source = RecordedReplaySource(log_path)
    from_ten = list(source.replay(SESSION, 0, dt.time(10, 0)))
    assert from_ten == [f for f in frames if f.time_et >= "10:00:00"]
    began = time.monotonic()
    ten_minutes = [f for f in frames if "10:00:00" <= f.time_et <= "10:10:00"]
    write_log(tmp_path / "ten.jsonl", ten_minutes)
    assert len(list(RecordedReplaySource(tmp_path / "ten.jsonl").replay(SESSION, 1200, dt.time(10, 0)))) == len(ten_minutes)
    assert 0.45 <= time.monotonic() - began < 3  # 600 s of event time at 1200× is 0.5 s of wall time
    with pytest.raises(KeyError, match="2024-09-04"):
        source.replay(dt.date(2024, 9, 4), 0, dt.time(9, 22))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(validate_outgoing(frames[0]) + "\n" + '{"type": "status"}\n')
    with pytest.raises(RecordedLogError, match=r"bad.jsonl:2: not an engine frame"):
        read_log(bad)
    backwards = tmp_path / "backwards.jsonl"
    backwards.write_text(validate_outgoing(frames[5]) + "\n" + validate_outgoing(frames[0]) + "\n")
    with pytest.raises(RecordedLogError, match="event-time order"):
        read_log(backwards)


def test_the_server_records_what_it_sends_as_a_replayable_log(tmp_path, log_path):
    record = tmp_path / "recorded.jsonl"
    with TestClient(create_app(RecordedReplaySource(log_path), record=record)) as client:
        with client.websocket_connect("/ws") as ws:
            ws.receive_json()
            ws.send_text(replay_request())
            read_until_replay_ends(ws)
    assert record.read_text() == log_path.read_text()
    assert RecordedReplaySource(record).sessions() == [SESSION]
