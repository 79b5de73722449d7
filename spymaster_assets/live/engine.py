"""The incremental engine (SPEC §11): event slices in, WebSocket messages out, equal to batch.

One way to compute each feature: at every 30 s grid time t the engine calls the batch kernels
(`lib/state.build_bars/build_levels/find_session_anchors/build_state`) on what it has buffered
— the session prefix of trades and 1-min bars, the trailing book window of `lib/live_window` —
with queries for t only, and appends the rows. The kernels are causal, so the rows equal the
batch silver/state rows; the Pentaview streams, their derivatives and the alerts are the
`lib/streams` / `lib/stream_alerts` functions on the rows so far (causal per row as well), with
the session's as-of gold/stream_normalization. Signals are `AsOf.answer` and `ServingModel`
(what `query_answer` / `model_answer` serve) on the setup described from the rows so far.

Everything the engine answers from is as of the session (`SessionArtifacts.load`): fitted or
built on earlier sessions only, read from the session's own partitions.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from ..lib.calendar import ns_to_et, session_window
from ..lib.events import EVENT_SCHEMA
from ..lib.features.bars import atr as atr_of, bars_from_trades, resample_bars
from ..lib.features.levels import levels_asof
from ..lib.live_window import book_window_s, trailing
from ..lib.retrieval import OutcomeSmoother
from ..lib.state import OptionsInputs, SessionBars, SessionInputs, StateConfig, build_bars, build_levels, build_state, find_session_anchors
from ..lib.stream_alerts import ALERTS, compute_alerts
from ..lib.stream_projections import HORIZON, LOOKBACK, ProjectionModels
from ..lib.stream_projections import project as project_bands
from ..lib.streams import compute_streams
from . import messages as m
from .analogs import SessionArtifacts
from ..lake import Lake
from .replay import DEFAULT_START, KNOWN_AT, EventSlice, Replay, SessionData, read_session

NS_PER_S = 1_000_000_000
GRID_NS = StateConfig().grid_step_s * NS_PER_S
CANDLE_NS = 120 * NS_PER_S
LEVEL_KINDS = ("PM_HIGH", "PM_LOW", "OR_HIGH", "OR_LOW", "SMA_90", "EMA_20")
STREAM_NAMES = ("sigma_m", "sigma_f", "sigma_b", "sigma_d", "sigma_s", "sigma_p", "sigma_r")
COMPOSITES = ("alignment", "divergence", "alignment_dealer")
DERIVED = ("sigma_p", "sigma_m", "sigma_f", "sigma_b")
SMOOTHING_HALF_LIFE_QUERIES = 4.0  # 2 minutes of 30 s queries (SPEC §8: configurable)
ALERT_MEANINGS = {a.name: a.meaning for a in ALERTS}


def clock_of(ts_ns: int) -> str:
    return ns_to_et(ts_ns).strftime("%H:%M:%S")


def _none_if_nan(value):
    if value is None:
        return None
    value = float(value)
    return None if np.isnan(value) else value


class BarBuilder:
    """The session prefix's bars by the batch kernels (`bars_from_trades`, `resample_bars`, `atr`),
    without re-aggregating closed minutes: trades before the current minute were aggregated
    once into closed 10 s and 1 min bars; only the current minute's trades are aggregated again.
    Bars group by their start, so a bar aggregated from its own trades alone is the batch bar."""

    def __init__(self) -> None:
        self.cut_ns = 0  # trades before this minute boundary are in the closed bars
        self.closed_10s: pl.DataFrame | None = None
        self.closed_1m: pl.DataFrame | None = None

    def bars(self, inputs: SessionInputs, t_ns: int) -> SessionBars:
        trades = inputs.trades
        if not (inputs.has("T1") and trades is not None and trades.height):
            return build_bars(inputs)  # T0: the 1-min bars are the (small) bronze ohlcv-1m prefix
        ts = trades["ts_event"]
        cut = t_ns - t_ns % (60 * NS_PER_S)
        if cut > self.cut_ns:
            newly = trades.slice(int(ts.search_sorted(self.cut_ns, side="left")),
                                 int(ts.search_sorted(cut, side="left")) - int(ts.search_sorted(self.cut_ns, side="left")))
            if newly.height:
                new_10s = bars_from_trades(newly, 10)
                new_1m = resample_bars(new_10s, 60)
                self.closed_10s = new_10s if self.closed_10s is None else pl.concat([self.closed_10s, new_10s])
                self.closed_1m = new_1m if self.closed_1m is None else pl.concat([self.closed_1m, new_1m])
            self.cut_ns = cut
        tail = trades.slice(int(ts.search_sorted(self.cut_ns, side="left")))
        tail_10s = bars_from_trades(tail, 10) if tail.height else None
        bars_10s = pl.concat([f for f in (self.closed_10s, tail_10s) if f is not None])
        bars_1m = pl.concat([f for f in (self.closed_1m, None if tail_10s is None else resample_bars(tail_10s, 60))
                             if f is not None])
        bars_1m = bars_1m.with_columns(atr_of(bars_1m).alias("atr"))
        return SessionBars(bars_10s=bars_10s, bars_1m=bars_1m, bars_2m=resample_bars(bars_1m.drop("atr"), 120))


@dataclass
class Approach:
    approach_id: str
    level_kind: str
    last: m.LevelSignal | None = None


@dataclass
class LiveEngine:
    """Maintains one session's bars, levels, anchors, state rows, streams and approaches."""

    data: SessionData
    artifacts: SessionArtifacts | None = None
    config: StateConfig = field(default_factory=StateConfig)
    state: pl.DataFrame | None = field(default=None, init=False)  # the rows so far (silver/state columns)
    streams: pl.DataFrame | None = field(default=None, init=False)
    step_seconds: list[float] = field(default_factory=list, init=False)  # compute (wall) time per grid boundary
    step_cpu_seconds: list[float] = field(default_factory=list, init=False)  # the same in process CPU time
    phase_seconds: dict[str, float] = field(default_factory=dict, init=False)  # where that time went, summed

    def __post_init__(self) -> None:
        self.window = session_window(self.data.session)
        self.book_window_ns = book_window_s() * NS_PER_S
        self._pending: dict[str, list[pl.DataFrame]] = {name: [] for name in self.data.tables}
        self._buffers: dict[str, pl.DataFrame] = {name: frame.clear().drop(KNOWN_AT)
                                                   for name, frame in self.data.tables.items()}
        self._state_frames: list[pl.DataFrame] = []
        self._active_alerts: set[tuple[str, str]] = set()
        self._approaches: dict[str, Approach] = {}
        self._smoother = OutcomeSmoother(SMOOTHING_HALF_LIFE_QUERIES)
        self._bar_builder = BarBuilder()
        self._levels_cache: tuple[int, pl.DataFrame] | None = None
        self._history_sent = False

    def _levels(self, inputs: SessionInputs, bars: SessionBars, t_ns: int) -> pl.DataFrame:
        """`build_levels` again only when a 1-min bar has closed: every level becomes known (or
        moves) at a bar close, so between closes the active levels cannot change."""
        closed = int(bars.bars_1m["bar_end_ns"].search_sorted(t_ns, side="right"))
        if self._levels_cache is None or self._levels_cache[0] != closed:
            self._levels_cache = (closed, build_levels(inputs, bars))
        return self._levels_cache[1]

    # -- input ------------------------------------------------------------------------------------------------

    def feed(self, events: EventSlice) -> None:
        for name, frame in events.tables.items():
            if frame.height:
                self._pending[name].append(frame)

    def _consolidate(self, t_ns: int) -> None:
        """Fold pending slices into the buffers; trim the windowed ones to what t's features read."""
        since = t_ns - self.book_window_ns
        for name, pending in self._pending.items():
            if pending:
                fresh = pl.concat(pending, how="vertical_relaxed").drop(KNOWN_AT)
                self._buffers[name] = pl.concat([self._buffers[name], fresh], how="vertical_relaxed")
                pending.clear()
        if "futures_mbp10" in self._buffers:
            self._buffers["futures_mbp10"] = trailing(self._buffers["futures_mbp10"], since)
        if "options_mbp1" in self._buffers:
            self._buffers["options_mbp1"] = trailing(self._buffers["options_mbp1"], since, by="instrument_id")

    def inputs(self) -> SessionInputs:
        d, b = self.data, self._buffers
        options = None
        if d.options_reference is not None:
            options = OptionsInputs(definitions=d.options_reference.definitions, trades=b["options_trades"],
                                    mbp1=b["options_mbp1"], open_interest=d.options_reference.open_interest)
        return SessionInputs(session=d.session, tier=d.tier, ohlcv_1m=b.get("futures_ohlcv_1m"),
                             trades=b.get("futures_trades"), book=b.get("futures_mbp10"), options=options,
                             warmup_bars_2m=d.warmup_bars_2m)

    # -- one grid boundary ------------------------------------------------------------------------------------

    def step(self, t_ns: int, emit: bool = True) -> list[m.BaseModel]:
        """Everything known at grid time t: the candle, and from 09:30 the state rows, streams,
        projections, alerts and approach signals. `emit=False` (warm-up) maintains the rows only."""
        if t_ns % GRID_NS:
            raise ValueError(f"{t_ns} is not on the {GRID_NS // NS_PER_S} s grid")
        in_analysis = self.window.rth_open_ns <= t_ns <= self.window.analysis_end_ns
        if not emit and not in_analysis:
            return []
        began, began_cpu = time.perf_counter(), time.process_time()
        self._consolidate(t_ns)
        inputs = self.inputs()
        bars = self._bar_builder.bars(inputs, t_ns)
        levels = self._levels(inputs, bars, t_ns)
        out: list[m.BaseModel] = []
        if emit:
            if not self._history_sent:
                out += self._history(t_ns, bars.bars_2m, levels)
                self._history_sent = True
            candle = self._candle(t_ns, bars.bars_2m, levels)
            if candle is not None:
                out.append(candle)
        self._phase("bars, levels, candle", began)
        if in_analysis:
            mark = time.perf_counter()
            events = find_session_anchors(inputs, bars, levels, self.config) if levels.height else pl.DataFrame(schema=EVENT_SCHEMA)
            rows = build_state(inputs, bars, levels, events, self.config, times=np.array([t_ns]))
            self._phase("anchors and the state row", mark)
            out += self._rows_at(t_ns, rows, emit)
        self.step_seconds.append(time.perf_counter() - began)
        self.step_cpu_seconds.append(time.process_time() - began_cpu)
        return out

    def _phase(self, name: str, since: float) -> None:
        self.phase_seconds[name] = self.phase_seconds.get(name, 0.0) + time.perf_counter() - since

    def _frame(self, t_ns: int) -> dict:
        return {"session": self.data.session, "ts_ns": t_ns, "time_et": clock_of(t_ns)}

    def _history(self, t_ns: int, bars_2m: pl.DataFrame, levels: pl.DataFrame) -> list[m.Candle]:
        """With the first message, the 2-min bars closed since the premarket (04:00 ET) before the
        current one, as final candles stamped at their close: the chart opens with its context."""
        closed = bars_2m.filter((pl.col("bar_start_ns") >= self.window.premarket_start_ns)
                                & (pl.col("bar_start_ns") + CANDLE_NS < t_ns))
        if closed.height == 0:
            return []
        ends = closed["bar_end_ns"].to_numpy()
        known = levels_asof(levels, ends) if levels.height else pl.DataFrame(schema={"t_ns": pl.Int64, "level_kind": pl.Utf8,
                                                                                       "level_price": pl.Float64})
        by_end: dict[int, dict[str, float]] = {}
        for end, kind, price in known.select("t_ns", "level_kind", "level_price").iter_rows():
            by_end.setdefault(end, {})[kind] = price
        return [m.Candle(**self._frame(bar["bar_end_ns"]), bar_start_ns=bar["bar_start_ns"], open=bar["open"],
                         high=bar["high"], low=bar["low"], close=bar["close"], volume=int(bar["volume"]), final=True,
                         levels=[m.LevelLine(kind=k, price=by_end.get(bar["bar_end_ns"], {}).get(k)) for k in LEVEL_KINDS])
                for bar in closed.iter_rows(named=True)]

    def _candle(self, t_ns: int, bars_2m: pl.DataFrame, levels: pl.DataFrame) -> m.Candle | None:
        forming = bars_2m.filter((pl.col("bar_start_ns") < t_ns) & (pl.col("bar_start_ns") + CANDLE_NS >= t_ns))
        if forming.height == 0:
            return None
        bar = forming.row(-1, named=True)
        known = dict(levels_asof(levels, [t_ns]).select("level_kind", "level_price").iter_rows()) if levels.height else {}
        return m.Candle(**self._frame(t_ns), bar_start_ns=bar["bar_start_ns"], open=bar["open"], high=bar["high"],
                        low=bar["low"], close=bar["close"], volume=int(bar["volume"]),
                        final=bar["bar_start_ns"] + CANDLE_NS == t_ns,
                        levels=[m.LevelLine(kind=k, price=known.get(k)) for k in LEVEL_KINDS])

    def _rows_at(self, t_ns: int, rows: pl.DataFrame, emit: bool) -> list[m.BaseModel]:
        self._state_frames.append(rows)
        self.state = pl.concat(self._state_frames, how="vertical_relaxed")
        if self.artifacts is None:
            return []
        mark = time.perf_counter()
        self.streams = compute_streams(self.state, self.artifacts.stream_stats)
        now = self.streams.filter(pl.col("t_ns") == t_ns)
        out: list[m.BaseModel] = []
        out += self._alerts(t_ns)
        if emit:
            out += [self._stream_update(t_ns, r, rows) for r in now.iter_rows(named=True)]
            out += self._projections(t_ns, now)
        self._phase("streams, alerts, projections", mark)
        mark = time.perf_counter()
        out += self._signals(t_ns, rows, emit)
        self._phase("approach signals", mark)
        return out if emit else []

    def _stream_update(self, t_ns: int, r: dict, rows: pl.DataFrame) -> m.StreamUpdate:
        state_row = rows.filter(pl.col("level_kind") == r["level_kind"]).row(0, named=True)
        skip = {"session", "t_ns", "level_kind", "time_bucket", "tier", "in_approach"}
        return m.StreamUpdate(
            **self._frame(t_ns), level_kind=r["level_kind"], level_price=r["level_price"], distance_atr=_none_if_nan(r["d_atr"]),
            tier=r["tier"], streams={s: _none_if_nan(r[s]) for s in STREAM_NAMES},
            composites={c: _none_if_nan(r[c]) for c in COMPOSITES},
            derivatives={s: m.Derivatives(slope=_none_if_nan(r[f"{s}_slope"]), curvature=_none_if_nan(r[f"{s}_curvature"]),
                                          jerk=_none_if_nan(r[f"{s}_jerk"])) for s in DERIVED},
            state={k: _none_if_nan(v) for k, v in state_row.items() if k not in skip})

    def _projections(self, t_ns: int, now: pl.DataFrame) -> list[m.ProjectionUpdate]:
        projected = project(self.artifacts.projectors, self.streams, t_ns)
        return [m.ProjectionUpdate(**self._frame(t_ns), level_kind=kind, horizon_bars=HORIZON,
                                   model_as_of=self.artifacts.projection_as_of, projections=paths)
                for kind, paths in projected.items() if paths]

    def _alerts(self, t_ns: int) -> list[m.Alert]:
        """Onsets and ends of the hysteresis alerts, from `compute_alerts` on the streams so far."""
        active = compute_alerts(self.streams).filter(pl.col("t_ns") == t_ns)
        now = {(r["level_kind"], r["alert"]): r for r in active.iter_rows(named=True)}
        out = [m.Alert(**self._frame(t_ns), level_kind=kind, alert=name, state="fired", confidence=r["confidence"],
                       bars_active=r["bars_active"], meaning=ALERT_MEANINGS[name])
               for (kind, name), r in now.items() if r["onset"]]
        out += [m.Alert(**self._frame(t_ns), level_kind=kind, alert=name, state="cleared", confidence=None, bars_active=0,
                        meaning=ALERT_MEANINGS[name]) for kind, name in sorted(self._active_alerts - set(now))]
        self._active_alerts = set(now)
        return out

    def _signals(self, t_ns: int, rows: pl.DataFrame, emit: bool) -> list[m.LevelSignal]:
        out = []
        in_approach = rows.filter("in_approach")
        for r in in_approach.iter_rows(named=True):
            kind = r["level_kind"]
            approach = self._approaches.get(kind)
            if approach is None:
                approach = self._approaches[kind] = Approach(f"{self.data.session}_{kind}_{t_ns}", kind)
            approach.last = self.artifacts.signal(self.state, r, approach.approach_id, self._smoother, self._frame(t_ns))
            out.append(approach.last)
        for kind in sorted(set(self._approaches) - set(in_approach["level_kind"].to_list())):
            ended = self._approaches.pop(kind)
            self._smoother.reset(ended.approach_id)
            if ended.last is not None:
                out.append(ended.last.model_copy(update={**self._frame(t_ns), "approach_state": "ended"}))
        return out


def project(models: ProjectionModels, streams: pl.DataFrame, t_ns: int) -> dict[str, dict[str, m.QuantilePath]]:
    """Per level at t, the projected q10/q50/q90 paths of every stream with an as-of model: the batch's own
    `lib.stream_projections.project` on each level's last rows (the one place the engine calls the models)."""
    recent = streams.filter(pl.col("t_ns") > t_ns - (LOOKBACK + 2) * GRID_NS).filter(pl.col("t_ns") <= t_ns)
    bands = project_bands(models, recent, latest_only=True).filter(pl.col("t_ns") == t_ns).sort(
        ["level_kind", "stream", "horizon"])
    out: dict[str, dict[str, m.QuantilePath]] = {}
    for (kind, stream), group in bands.group_by(["level_kind", "stream"], maintain_order=True):
        out.setdefault(kind, {})[stream] = m.QuantilePath(q10=group["q10"].to_list(), q50=group["q50"].to_list(),
                                                          q90=group["q90"].to_list())
    return out


def run(replay: Replay, engine: LiveEngine) -> Iterator[m.BaseModel]:
    """Feed every slice to the engine; at each grid time, its messages (none during warm-up)."""
    for events in replay.slices():
        engine.feed(events)
        if events.end_ns % GRID_NS == 0:
            yield from engine.step(events.end_ns, emit=not events.warmup)


class EngineReplaySource:
    """`messages.ReplaySource` over a lake: sessions with bronze and the as-of artifacts the engine answers from."""

    def __init__(self, lake: Lake):
        self.lake = lake

    def sessions(self) -> list[dt.date]:
        ready = set(self.lake.partitions("gold", "stream_normalization"))
        return [dt.date.fromisoformat(d) for d in self.lake.partitions("raw", "dbn_files")
                if d in ready and self.lake.has_partition("bronze", "futures_ohlcv_1m", d)]

    def replay(self, session: dt.date, speed: float, start: dt.time = DEFAULT_START) -> Iterator[m.BaseModel]:
        data = read_session(self.lake, session)
        engine = LiveEngine(data, SessionArtifacts.load(self.lake, session))
        yield from run(Replay(data, speed=speed, start=start), engine)
