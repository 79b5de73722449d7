"""The live WebSocket contract: valid frames pass, malformed ones are rejected with a reason."""

import datetime as dt
import json

import pydantic
import pytest

from spymaster_assets.live.messages import (Candle, ErrorFrame, LevelLine, Ping, ReplayRequest, message_json_schema,
                                            parse_incoming, validate_outgoing)

SESSION = dt.date(2024, 9, 3)


def test_a_candle_round_trips_as_json():
    candle = Candle(session=SESSION, ts_ns=10, time_et="09:32:00", bar_start_ns=0, open=5000.0, high=5001.25,
                    low=4999.5, close=5000.75, volume=42, final=True,
                    levels=[LevelLine(kind="OR_HIGH", price=None), LevelLine(kind="PM_LOW", price=4990.25)])
    frame = json.loads(validate_outgoing(candle))
    assert frame["type"] == "candle" and frame["session"] == "2024-09-03"
    assert frame["levels"][0] == {"kind": "OR_HIGH", "price": None}


def test_client_frames_parse_and_malformed_ones_raise():
    assert parse_incoming('{"type": "ping"}') == Ping()
    replay = parse_incoming('{"type": "replay", "session": "2024-09-03", "speed": 0}')
    assert replay == ReplayRequest(session=SESSION, speed=0.0, start="09:22")
    for bad in ('{"type": "replay", "session": "2024-09-03", "speed": -1}',  # negative speed
                '{"type": "replay", "session": "2024-09-03", "speed": 1, "start": "9:30"}',  # not HH:MM
                '{"type": "subscribe"}', '{"type": "ping", "extra": 1}', "not json"):
        with pytest.raises(pydantic.ValidationError):
            parse_incoming(bad)


def test_an_invalid_outgoing_frame_is_a_bug_not_a_silent_send():
    with pytest.raises(pydantic.ValidationError):
        Candle(session=SESSION, ts_ns=10, time_et="09:32:00", bar_start_ns=0, open=1.0, high=1.0, low=1.0, close=1.0,
               volume=1, final=True, levels=[LevelLine(kind="VWAP", price=1.0)])


def test_the_schema_documents_every_frame_type():
    schema = json.dumps(message_json_schema())
    for frame_type in ("candle", "stream_update", "projection_update", "alert", "level_signal", "status", "error",
                       "snapshot", "replay", "ping"):
        assert f'"const": "{frame_type}"' in schema, frame_type
    assert json.loads(validate_outgoing(ErrorFrame(error="bad frame")))["type"] == "error"
