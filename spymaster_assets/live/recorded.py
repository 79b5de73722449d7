"""Replaying a captured live session: a JSON-lines log of engine frames as a `ReplaySource`.

The server writes such a log with `--record FILE` (one validated engine frame per line, exactly the text it sent);
`RecordedReplaySource(path)` plays it back at any speed, so a session watched live can be shown again without the
lake or the models, and the server and page can be tested before (and independently of) the engine.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pydantic
from pydantic import TypeAdapter

from ..lib.calendar import et_to_ns
from .messages import EngineMessage, validate_outgoing

NS_PER_S = 1_000_000_000
DEFAULT_START = dt.time(9, 22)
_ENGINE_FRAME = TypeAdapter(EngineMessage)


class RecordedLogError(ValueError):
    """A log line that is not an engine frame, or a session whose frames go back in time."""


def read_log(path: str | Path) -> dict[dt.date, list]:
    """The engine frames of a log, per session in log order; any bad line is an error naming its line number."""
    sessions: dict[dt.date, list] = {}
    with open(path, encoding="utf-8") as log:
        for number, line in enumerate(log, start=1):
            if not line.strip():
                continue
            try:
                frame = _ENGINE_FRAME.validate_json(line)
            except pydantic.ValidationError as exc:
                raise RecordedLogError(f"{path}:{number}: not an engine frame: {exc.errors()[0]['msg']}") from exc
            frames = sessions.setdefault(frame.session, [])
            if frames and frame.ts_ns < frames[-1].ts_ns:
                raise RecordedLogError(f"{path}:{number}: ts_ns {frame.ts_ns} is before the previous frame of "
                                       f"{frame.session} ({frames[-1].ts_ns}); a log must be in event-time order")
            frames.append(frame)
    return sessions


def write_log(path: str | Path, frames: Iterable) -> int:
    """Write engine frames as a log (each validated exactly as the server validates on send); returns the count."""
    count = 0
    with open(path, "w", encoding="utf-8") as log:
        for frame in frames:
            log.write(validate_outgoing(frame) + "\n")
            count += 1
    return count


class RecordedReplaySource:
    """`messages.ReplaySource` over a recorded log: the same frames, re-paced by `speed` from the `start` clock."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._frames = read_log(self.path)

    def sessions(self) -> list[dt.date]:
        return sorted(self._frames)

    def replay(self, session: dt.date, speed: float, start: dt.time = DEFAULT_START) -> Iterator:
        if session not in self._frames:
            raise KeyError(f"session {session} is not in {self.path} (it has {', '.join(map(str, self.sessions()))})")
        if speed < 0:
            raise ValueError(f"speed must be ≥ 0 (0 = as fast as possible), got {speed}")
        start_ns = et_to_ns(session, start)
        frames = [frame for frame in self._frames[session] if frame.ts_ns >= start_ns]
        return _paced(frames, speed)


def _paced(frames: list, speed: float) -> Iterator:
    """Yield frames so that event time advances `speed`× wall time (0 = no waiting). Each frame is due at a fixed
    offset from the first, so per-frame overheads do not accumulate into drift."""
    if not frames:
        return
    wall_start, event_start = time.monotonic(), frames[0].ts_ns
    for frame in frames:
        if speed > 0:
            delay = wall_start + (frame.ts_ns - event_start) / NS_PER_S / speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield frame


class MessageRecorder:
    """Appends the text of every engine frame the server sends to a log that `RecordedReplaySource` can replay."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            self._file.write(text + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()
