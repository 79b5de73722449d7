"""The live server (SPEC §11): the trader's dashboard and a WebSocket that streams a replay's frames to it.

One replay runs at a time and every client watches the same one. The replay iterator (`ReplaySource.replay`) runs
in a worker thread ("the engine thread"); each frame it yields is validated once (`messages.validate_outgoing`),
folded into the session state a new client is given on connect (`Snapshot`), and offered to every client's
bounded outbox. The engine thread never waits for a client: offering takes a short lock and never blocks.

Drop policy of a client's outbox (capacity `QUEUE_CAPACITY` frames), applied when a frame arrives and it is full:
  1. drop the oldest *superseded-kind* frame: a forming (non-final) candle, a stream or projection update, an
     active level_signal, a periodic status — a later frame of the same kind replaces what it showed;
  2. if every queued frame is one that must not be lost (final candles, alerts, approach ends, errors, snapshots),
     drop the whole backlog and queue a fresh snapshot of the session state instead, so the page redraws correctly.
Every dropped frame is counted per client and reported in that client's `Status.dropped_frames`.

Clients send `ReplayRequest` (start or restart a replay; a new one retires the old iterator) and `Ping` (answered
with a `Status`). A malformed frame gets an `ErrorFrame`; the connection stays open.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydantic
from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from .messages import (Alert, Candle, ErrorFrame, LevelSignal, Ping, ProjectionUpdate, ReplayRequest, ReplaySource,
                       Snapshot, Status, StreamUpdate, message_json_schema, parse_incoming, validate_outgoing)
from .recorded import MessageRecorder, RecordedReplaySource

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4070
QUEUE_CAPACITY = 256  # ~2 min of a busy session's frames: a client this far behind is shown superseding frames only
STATUS_INTERVAL_S = 1.0  # how often a running replay tells clients its clock and their drop count
STREAM_HISTORY_BARS = 120  # per level in a joining client's snapshot: the stream panel's last hour
JOIN_TIMEOUT_S = 2.0


def is_superseded_kind(message) -> bool:
    """Frames whose content a later frame of the same kind replaces (safe to drop for a slow client)."""
    if isinstance(message, Candle):
        return not message.final
    if isinstance(message, LevelSignal):
        return message.approach_state == "active"
    return isinstance(message, (StreamUpdate, ProjectionUpdate))


# An outbox item: ready JSON text, or a Status/Snapshot model completed with the client's drop count when sent.
@dataclass(frozen=True)
class _Item:
    payload: str | Status | Snapshot
    droppable: bool


class ClientOutbox:
    """A client's bounded outbox: filled by any thread without blocking, drained by the client's sender task."""

    def __init__(self, loop: asyncio.AbstractEventLoop, capacity: int = QUEUE_CAPACITY):
        self.capacity = capacity
        self.dropped = 0
        self._loop = loop
        self._items: deque[_Item] = deque()
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self._wake_pending = False
        self._resync: Snapshot | None = None

    def offer(self, item: _Item, resync: Snapshot | None = None) -> None:
        """Queue `item`, applying the drop policy when full; `resync` is the state to fall back to (rule 2)."""
        with self._lock:
            if len(self._items) >= self.capacity:
                self._make_room(resync)
            self._items.append(item)
            wake = not self._wake_pending
            self._wake_pending = True
        if wake:
            try:
                self._loop.call_soon_threadsafe(self._ready.set)
            except RuntimeError:  # the client's event loop is gone: it is disconnecting
                pass

    def _make_room(self, resync: Snapshot | None) -> None:
        for index, queued in enumerate(self._items):
            if queued.droppable:
                del self._items[index]
                self.dropped += 1
                return
        self.dropped += len(self._items)
        self._items.clear()
        if resync is not None:
            self._items.append(_Item(resync, droppable=False))

    async def get(self) -> _Item:
        while True:
            with self._lock:
                if self._items:
                    return self._items.popleft()
                self._wake_pending = False
                self._ready.clear()
            await self._ready.wait()

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class SessionState:
    """What a client joining now needs to draw: the candles so far, the newest stream/projection/signal per level,
    and the alerts, in the order the engine emitted them."""

    session: dt.date | None = None
    speed: float = 0.0
    running: bool = False
    replay_time_et: str | None = None
    candles: dict[int, Candle] = field(default_factory=dict)
    latest: dict[tuple[str, str], StreamUpdate | ProjectionUpdate | LevelSignal] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    stream_history: dict[str, deque[StreamUpdate]] = field(default_factory=dict)

    def apply(self, message) -> None:
        self.replay_time_et = message.time_et
        if isinstance(message, Candle):
            self.candles[message.bar_start_ns] = message
        elif isinstance(message, Alert):
            self.alerts.append(message)
        else:
            kind = message.level.kind if isinstance(message, LevelSignal) else message.level_kind
            self.latest[(message.type, kind)] = message
            if isinstance(message, StreamUpdate):  # a page joining mid-session draws the streams' recent past
                history = self.stream_history.setdefault(kind, deque(maxlen=STREAM_HISTORY_BARS))
                history.append(message.model_copy(update={"state": {}}))

    def recent_streams(self) -> list[StreamUpdate]:
        return sorted((u for history in self.stream_history.values() for u in history), key=lambda u: (u.ts_ns, u.level_kind))


class LiveHub:
    """The one replay, its state, and the connected clients' outboxes."""

    def __init__(self, source: ReplaySource, *, recorder: MessageRecorder | None = None,
                 queue_capacity: int = QUEUE_CAPACITY, status_interval_s: float = STATUS_INTERVAL_S):
        self.source = source
        self.recorder = recorder
        self.queue_capacity = queue_capacity
        self.status_interval_s = status_interval_s
        self.state = SessionState()
        self.sessions = source.sessions()
        self.engine_frames = 0
        self.invalid_frames = 0
        self.dropped_by_departed = 0
        self._clients: set[ClientOutbox] = set()
        self._lock = threading.Lock()
        self._generation = 0
        self._workers: list[threading.Thread] = []
        self._last_status = 0.0

    # --- clients --------------------------------------------------------------------------------------------------

    def connect(self, outbox: ClientOutbox) -> None:
        """Register a client and queue its snapshot under one lock, so it misses and repeats no frame."""
        with self._lock:
            outbox.offer(_Item(self._snapshot(), droppable=False))
            self._clients.add(outbox)

    def disconnect(self, outbox: ClientOutbox) -> None:
        with self._lock:
            self._clients.discard(outbox)
            self.dropped_by_departed += outbox.dropped

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def dropped_total(self) -> int:
        with self._lock:
            return self.dropped_by_departed + sum(client.dropped for client in self._clients)

    def status(self, dropped_frames: int = 0) -> Status:
        s = self.state
        return Status(session=s.session, speed=s.speed, running=s.running, replay_time_et=s.replay_time_et,
                      dropped_frames=dropped_frames, sessions=self.sessions)

    def _snapshot(self) -> Snapshot:
        s = self.state
        return Snapshot(status=self.status(), candles=list(s.candles.values()), latest=list(s.latest.values()),
                        alerts=list(s.alerts), streams=s.recent_streams())

    def _broadcast(self, item: _Item) -> None:
        resync = None
        for client in self._clients:
            if len(client) >= client.capacity and resync is None:
                resync = self._snapshot()  # built only when some outbox is full of frames that must not be lost
            client.offer(item, resync)

    # --- the replay -----------------------------------------------------------------------------------------------

    def start_replay(self, session: dt.date, speed: float, start: dt.time) -> None:
        """Retire the running replay (its worker closes its iterator at its next frame) and start `session`."""
        if session not in self.sessions:
            self.sessions = self.source.sessions()
            if session not in self.sessions:
                raise KeyError(f"no replay available for session {session}")
        with self._lock:
            self._generation += 1
            generation = self._generation
            self.state = SessionState(session=session, speed=speed, running=True)
            self._broadcast(_Item(self._snapshot(), droppable=False))  # every page starts the new session afresh
            worker = threading.Thread(target=self._run, args=(generation, session, speed, start), daemon=True,
                                      name=f"replay-{session}-{generation}")
            self._workers = [w for w in self._workers if w.is_alive()] + [worker]
            worker.start()  # under the lock: stop() never sees a worker it cannot join

    def stop(self) -> None:
        with self._lock:
            self._generation += 1
            self.state.running = False
            workers = list(self._workers)
        for worker in workers:
            worker.join(JOIN_TIMEOUT_S)

    def _run(self, generation: int, session: dt.date, speed: float, start: dt.time) -> None:
        frames = None
        try:
            frames = self.source.replay(session, speed, start)
            for message in frames:
                if generation != self._generation:
                    break
                self.publish(message, generation)
        except Exception as exc:  # the engine failed: tell the clients, keep serving
            log.exception("replay of %s failed", session)
            self._publish_error(generation, "replay failed", f"{type(exc).__name__}: {exc}")
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()
            with self._lock:
                if generation == self._generation:
                    self.state.running = False
                    self._broadcast(_Item(self.status(), droppable=False))

    def publish(self, message, generation: int | None = None) -> None:
        """Validate one engine frame, fold it into the state, record it and offer it to every client."""
        try:
            text = validate_outgoing(message)
        except pydantic.ValidationError as exc:  # a bug in the engine: never sent, counted, reported
            self.invalid_frames += 1
            detail = describe_validation_error(exc, getattr(message, "type", None))
            log.error("engine frame failed validation and was not sent: %s", detail)
            self._publish_error(generation, "invalid engine frame not sent", detail)
            return
        with self._lock:
            if generation is not None and generation != self._generation:
                return
            self.engine_frames += 1
            self.state.apply(message)
            if self.recorder is not None:
                self.recorder.write(text)
            self._broadcast(_Item(text, droppable=is_superseded_kind(message)))
            now = time.monotonic()
            if now - self._last_status >= self.status_interval_s:
                self._last_status = now
                self._broadcast(_Item(self.status(), droppable=True))

    def _publish_error(self, generation: int | None, error: str, detail: str) -> None:
        text = validate_outgoing(ErrorFrame(error=error, detail=detail))
        with self._lock:
            if generation is None or generation == self._generation:
                self._broadcast(_Item(text, droppable=False))


def describe_validation_error(exc: pydantic.ValidationError, frame_type: str | None = None, limit: int = 5) -> str:
    """The errors of one frame's own type (a union reports every branch it tried), as `path: message` lines."""
    errors = exc.errors()
    own = [e for e in errors if frame_type is not None and frame_type in e["loc"][:2]] or errors
    lines = []
    for error in own[:limit]:
        path = [str(p) for p in error["loc"] if not str(p).startswith(("tagged-union", "function-"))]
        lines.append(f"{'.'.join(path) or 'frame'}: {error['msg']}")
    return "; ".join(lines)


def _render(item: _Item, outbox: ClientOutbox) -> str:
    payload = item.payload
    if isinstance(payload, str):
        return payload
    if isinstance(payload, Snapshot):
        payload = payload.model_copy(update={"status": payload.status.model_copy(
            update={"dropped_frames": outbox.dropped})})
    else:
        payload = payload.model_copy(update={"dropped_frames": outbox.dropped})
    return validate_outgoing(payload)


async def _send_outbox(websocket: WebSocket, outbox: ClientOutbox) -> None:
    while True:
        item = await outbox.get()
        await websocket.send_text(_render(item, outbox))


def _error_item(error: str, detail: str | None) -> _Item:
    return _Item(validate_outgoing(ErrorFrame(error=error, detail=detail)), droppable=False)


def _client_frame_text(message: dict) -> str:
    if message.get("text") is not None:
        return message["text"]
    return (message.get("bytes") or b"").decode("utf-8")


async def _handle_client_frame(hub: LiveHub, outbox: ClientOutbox, text: str) -> None:
    try:
        request = parse_incoming(text)
    except pydantic.ValidationError as exc:
        outbox.offer(_error_item("malformed client frame", describe_validation_error(exc)))
        return
    if isinstance(request, Ping):
        outbox.offer(_Item(hub.status(), droppable=False))
    elif isinstance(request, ReplayRequest):
        hour, minute = map(int, request.start.split(":"))
        try:
            start = dt.time(hour, minute)
        except ValueError as exc:
            outbox.offer(_error_item("bad replay start", str(exc)))
            return
        try:
            # source.sessions() may touch the lake: keep it off the event loop
            await asyncio.to_thread(hub.start_replay, request.session, request.speed, start)
        except KeyError as exc:
            outbox.offer(_error_item("unknown session", str(exc.args[0])))


def create_app(source: ReplaySource, *, extra_routes: Sequence[BaseRoute] = (), record: str | Path | None = None,
               replay: dt.date | None = None, speed: float = 0.0, start: dt.time = dt.time(9, 22),
               queue_capacity: int = QUEUE_CAPACITY) -> Starlette:
    """The ASGI app: the dashboard, its static files, the WebSocket, and the schema/status/health endpoints.

    `extra_routes` are mounted as given (e.g. the daily query API); `record` appends every engine frame sent to a
    JSON-lines log; `replay` starts that session at startup at `speed` from `start`.
    """
    hub = LiveHub(source, recorder=MessageRecorder(record) if record else None, queue_capacity=queue_capacity)

    async def websocket_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        outbox = ClientOutbox(asyncio.get_running_loop(), hub.queue_capacity)
        hub.connect(outbox)
        sender = asyncio.create_task(_send_outbox(websocket, outbox))
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                try:
                    text = _client_frame_text(message)
                except UnicodeDecodeError:
                    outbox.offer(_error_item("malformed client frame", "binary frame is not UTF-8 JSON"))
                    continue
                await _handle_client_frame(hub, outbox, text)
        except WebSocketDisconnect:
            pass
        finally:
            hub.disconnect(outbox)
            sender.cancel()

    async def index(_request):
        return FileResponse(STATIC_DIR / "index.html")

    async def schema(_request):
        return JSONResponse(message_json_schema())

    async def status(_request):
        return JSONResponse({"status": hub.status(dropped_frames=hub.dropped_total()).model_dump(mode="json"),
                             "clients": hub.client_count, "engine_frames": hub.engine_frames,
                             "invalid_frames": hub.invalid_frames})

    async def healthz(_request):
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        if replay is not None:
            hub.start_replay(replay, speed, start)
        yield
        hub.stop()
        if hub.recorder is not None:
            hub.recorder.close()

    routes: list[BaseRoute] = [
        Route("/", index), Route("/api/schema", schema), Route("/api/status", status), Route("/healthz", healthz),
        WebSocketRoute("/ws", websocket_endpoint), Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        *extra_routes]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.hub = hub
    return app


def run_server(source: ReplaySource, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
               record: str | Path | None = None, replay: dt.date | None = None, speed: float = 0.0,
               start: dt.time = dt.time(9, 22), extra_routes: Iterable[BaseRoute] = ()) -> None:
    """Serve the dashboard until interrupted; prints the URL to open."""
    import uvicorn

    app = create_app(source, extra_routes=tuple(extra_routes), record=record, replay=replay, speed=speed, start=start)
    print(f"Spymaster live dashboard: http://{host}:{port}/", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def main(argv: list[str] | None = None) -> None:
    """`python -m spymaster_assets.live.server LOG`: serve a recorded session log (see `recorded.py`)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("log", help="JSON-lines log of engine frames (written by --record)")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--record", help="append every engine frame sent to this JSON-lines log")
    parser.add_argument("--replay", type=dt.date.fromisoformat, help="start replaying this session at once")
    parser.add_argument("--speed", type=float, default=0.0, help="0 = as fast as possible, 1 = real time")
    parser.add_argument("--start", type=dt.time.fromisoformat, default=dt.time(9, 22), help="ET clock, HH:MM")
    args = parser.parse_args(argv)
    run_server(RecordedReplaySource(args.log), args.host, args.port, record=args.record, replay=args.replay,
               speed=args.speed, start=args.start)


if __name__ == "__main__":
    main()
