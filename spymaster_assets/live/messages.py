"""The live WebSocket contract (SPEC §11): every frame the server sends or accepts, as pydantic models.

The engine produces `ServerMessage`s; the server validates each one on send (`validate_outgoing`) and the page
reads them. `message_json_schema()` is the documented JSON schema (`spymaster live --schema` prints it; the copy in
docs/live_messages.schema.json is pinned by a test). All times are the event clock of the replayed session: `ts_ns` is int64 ns UTC,
`time_et` the same instant as an America/New_York wall-clock string for display.

Sign conventions are the SPEC's: `distance_atr` = (spot − level) / ATR; direction UP = price below the level
moving up, DOWN mirrored; analog paths are in ATR units *toward the level* (positive = through the level the way
the approach was going), aligned at the touch (offset 0).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

LevelKind = Literal["PM_HIGH", "PM_LOW", "OR_HIGH", "OR_LOW", "SMA_90", "EMA_20"]
Direction = Literal["UP", "DOWN"]
Outcome = Literal["BREAK", "REJECT", "CHOP"]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _SessionFrame(_Frame):
    session: dt.date
    ts_ns: int = Field(description="event time, ns since epoch UTC")
    time_et: str = Field(description="the same instant, HH:MM:SS America/New_York")


# --- price --------------------------------------------------------------------------------------------------------

class LevelLine(_Frame):
    kind: LevelKind
    price: float | None = Field(description="null until the level is known (e.g. OR levels before 09:45)")


class Candle(_SessionFrame):
    """A 2-minute OHLCV bar of the front month; sent while it forms (final=false) and once closed (final=true)."""
    type: Literal["candle"] = "candle"
    bar_start_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: int
    final: bool
    levels: list[LevelLine] = Field(description="the six levels as known at ts_ns (SMA/EMA move every bar)")


# --- streams, projections, alerts ---------------------------------------------------------------------------------

class Derivatives(_Frame):
    slope: float | None
    curvature: float | None
    jerk: float | None


class StreamUpdate(_SessionFrame):
    """Every 30 s per active level: the state row and the Pentaview streams (SPEC §10); null = tier absent."""
    type: Literal["stream_update"] = "stream_update"
    level_kind: LevelKind
    level_price: float
    distance_atr: float | None
    tier: str
    streams: dict[str, float | None] = Field(description="sigma_m, sigma_f, sigma_b, sigma_d, sigma_s, sigma_p, sigma_r")
    composites: dict[str, float | None] = Field(description="alignment, divergence, dealer-adjusted alignment")
    derivatives: dict[str, Derivatives] = Field(description="of the EWM-smoothed stream, from past rows only")
    state: dict[str, float | None] = Field(description="the silver state row's features at this bar")


class QuantilePath(_Frame):
    q10: list[float]
    q50: list[float]
    q90: list[float]


class ProjectionUpdate(_SessionFrame):
    """Every 30 s per active level: the next `horizon_bars` bars of each projected stream (as-of models)."""
    type: Literal["projection_update"] = "projection_update"
    level_kind: LevelKind
    bar_seconds: int = 30
    horizon_bars: int
    model_as_of: dt.date | None
    projections: dict[str, QuantilePath]


class Alert(_SessionFrame):
    """An alert's onset (state=fired) or its end (state=cleared), after hysteresis."""
    type: Literal["alert"] = "alert"
    level_kind: LevelKind
    alert: str
    state: Literal["fired", "cleared"]
    confidence: float | None
    bars_active: int
    meaning: str


# --- the approach answer ------------------------------------------------------------------------------------------

class LevelInfo(_Frame):
    kind: LevelKind
    price: float
    direction: Direction
    distance_atr: float


class Driver(_Frame):
    name: str = Field(description="trader words, e.g. 'thin wall at the level'")
    edge: float = Field(description="contribution to p(BREAK) vs the base rate")
    percentile: float | None = Field(description="this reading's percentile in the as-of history")


class RetrievalAnswer(_Frame):
    probabilities: dict[Outcome, float]
    p_break_interval: tuple[float, float]
    credible_level: float
    effective_n: float
    n_neighbours: int
    base_rates: dict[Outcome, float]
    edge: float = Field(description="p(BREAK) − base rate of BREAK")
    insufficient_history: bool
    median_similarity: float | None


class ModelAnswer(_Frame):
    p_break: float = Field(description="p(BREAK | decisive), calibrated")
    p_chop: float
    base_rate: float
    edge: float
    model_as_of: dt.date


class Analog(_Frame):
    """One similar past setup and what price did around its touch."""
    session: dt.date
    level_kind: LevelKind
    direction: Direction
    similarity: float
    weight: float
    outcome: Outcome
    mfe_atr: float
    mae_atr: float
    path_step_s: int
    path_start_s: int = Field(description="offset of path_atr[0] from the touch, seconds (negative = before)")
    path_atr: list[float | None] = Field(description="(price − level)/ATR × dir_sign: > 0 is through the level")


class Trust(_Frame):
    index_as_of: dt.date | None
    model_as_of: dt.date | None
    bucket: str = Field(description="the p(BREAK) bucket of this answer, e.g. '0.6–0.7'")
    bucket_hit_rate: float | None = Field(description="realised BREAK share of earlier answers in this bucket")
    bucket_n: int


class LevelSignal(_SessionFrame):
    """Every 30 s while a level is in approach (SPEC §6): what happened in similar past setups, as of the session."""
    type: Literal["level_signal"] = "level_signal"
    approach_id: str
    approach_state: Literal["active", "ended"]
    level: LevelInfo
    retrieval: RetrievalAnswer | None = Field(description="null when the index has no history for this session")
    model: ModelAnswer | None
    smoothed: dict[Outcome, float] | None = Field(description="EWMA of retrieval p over this approach (SPEC §8)")
    drivers: dict[Literal["break", "reject"], list[Driver]]
    analogs: list[Analog]
    context: dict[str, str | int | float | None] = Field(description="time bucket, attempt index, touches today, tier")
    trust: Trust


# --- session status and the join snapshot -------------------------------------------------------------------------

class Status(_Frame):
    type: Literal["status"] = "status"
    session: dt.date | None
    speed: float
    running: bool
    replay_time_et: str | None
    dropped_frames: int = Field(description="frames dropped for this client because it read too slowly")
    sessions: list[dt.date] = Field(description="sessions available for replay")


class ErrorFrame(_Frame):
    type: Literal["error"] = "error"
    error: str
    detail: str | None = None


ServerMessage = Annotated[Candle | StreamUpdate | ProjectionUpdate | Alert | LevelSignal | Status | ErrorFrame,
                          Field(discriminator="type")]
EngineMessage = Annotated[Candle | StreamUpdate | ProjectionUpdate | Alert | LevelSignal, Field(discriminator="type")]


class Snapshot(_Frame):
    """Sent to a client when it connects: everything it needs to draw the current state at once."""
    type: Literal["snapshot"] = "snapshot"
    status: Status
    candles: list[Candle]
    latest: list[EngineMessage] = Field(description="the newest stream/projection/signal per level")
    streams: list[StreamUpdate] = Field(default_factory=list, description=(
        "the recent stream bars of every level, oldest first, without their state rows (the stream panel's history)"))
    alerts: list[Alert] = Field(description="alerts fired this session, oldest first")


# --- what clients may send ----------------------------------------------------------------------------------------

class ReplayRequest(_Frame):
    type: Literal["replay"] = "replay"
    session: dt.date
    speed: float = Field(ge=0, description="0 = as fast as possible, 1 = real time")
    start: str = Field(default="09:22", pattern=r"^\d{2}:\d{2}$", description="ET clock time")


class Ping(_Frame):
    type: Literal["ping"] = "ping"


ClientMessage = Annotated[ReplayRequest | Ping, Field(discriminator="type")]

_SERVER = TypeAdapter(ServerMessage | Snapshot)
_CLIENT = TypeAdapter(ClientMessage)


def validate_outgoing(message: BaseModel) -> str:
    """The JSON text of a server frame, validated against the contract (a bad frame is a bug: it raises)."""
    text = message.model_dump_json()
    _SERVER.validate_json(text)
    return text


def parse_incoming(text: str) -> ReplayRequest | Ping:
    """A client frame; raises pydantic.ValidationError (answered with an ErrorFrame) when malformed."""
    return _CLIENT.validate_json(text)


def message_json_schema() -> dict:
    """The documented schema of every frame, both directions."""
    return {"server": _SERVER.json_schema(), "client": _CLIENT.json_schema()}


class ReplaySource(Protocol):
    """What the server needs from the engine: the sessions it can replay and a paced stream of engine messages.

    `replay` yields messages in event-time order, sleeping between them by `speed` (0 = no sleeping); closing the
    iterator stops the replay. It is run in a worker thread by the server.
    """

    def sessions(self) -> list[dt.date]: ...

    def replay(self, session: dt.date, speed: float, start: dt.time) -> Iterator[Candle | StreamUpdate | ProjectionUpdate
                                                                                   | Alert | LevelSignal]: ...
