"""Support for the live server tests: a realistic hand-built session of engine frames, and a real uvicorn server.

The session (for the server, dashboard and benchmark tests):

Deterministic from its seed: a 10 s price walk from 09:22 to 12:30 ET whose 2-min candles form every 30 s, the six
levels as the engine knows them (PM at 09:30, OR at 09:45, SMA_90/EMA_20 moving every closed bar), per active level
every 30 s a stream update and a projection, alerts when σ_P crosses ±0.5, and for levels in approach (|d_atr| ≤ 2
and price moving toward the level) a `level_signal` with retrieval, model, drivers and eight analogs whose paths
(ATR units toward the level, aligned at the touch) end as their outcome says. Every frame is a real contract model.
"""

from __future__ import annotations

import contextlib
import functools
import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import uvicorn

from spymaster_assets.lib.calendar import et_to_ns, ns_to_et
from spymaster_assets.live.messages import (Alert, Analog, Candle, Derivatives, Driver, LevelInfo, LevelLine,
                                            LevelSignal, ModelAnswer, ProjectionUpdate, QuantilePath, RetrievalAnswer,
                                            StreamUpdate, Trust)

SESSION = dt.date(2024, 9, 3)
NS = 1_000_000_000
STREAMS = ("sigma_p", "sigma_m", "sigma_f", "sigma_b", "sigma_d", "sigma_s", "sigma_r")
LEVELS = ("PM_HIGH", "PM_LOW", "OR_HIGH", "OR_LOW", "SMA_90", "EMA_20")
OUTCOMES = ("BREAK", "REJECT", "CHOP")
DRIVER_NAMES = {"break": ["thin wall at the level", "buyers accelerating", "first attempt today", "dealers short gamma"],
                "reject": ["heavy resting size", "flow fading into the level", "third touch today"]}


def _frame(session: dt.date, ts_ns: int) -> dict:
    return {"session": session, "ts_ns": int(ts_ns), "time_et": ns_to_et(int(ts_ns)).strftime("%H:%M:%S")}


def _walk(rng: np.random.Generator, n: int, start: float) -> np.ndarray:
    """A 10 s price walk on the tick grid with a slow swing, so price visits the levels more than once."""
    swing = 9.0 * np.sin(np.linspace(0, 3.2 * np.pi, n)) + 4.0 * np.sin(np.linspace(0, 11 * np.pi, n))
    noise = np.cumsum(rng.normal(0, 0.45, n))
    return np.round((start + swing + noise) * 4) / 4


def _analog_path(rng: np.random.Generator, outcome: str, approach: float) -> list[float | None]:
    """21 points, one a minute from −10 to +10 min around the touch: toward the level, at 0 on the touch, then
    through it (BREAK), back (REJECT) or around it (CHOP)."""
    before = np.linspace(-approach, 0, 11)[:-1] + rng.normal(0, 0.08, 10)
    target = {"BREAK": 1.6, "REJECT": -1.6, "CHOP": 0.0}[outcome] * rng.uniform(0.7, 1.3)
    after = target * np.sqrt(np.linspace(0, 1, 11)) + rng.normal(0, 0.12 if outcome != "CHOP" else 0.3, 11)
    after[0] = 0.0
    path = [float(v) for v in np.concatenate([before, after])]
    path[0] = None  # the earliest minute of a past session is sometimes missing: the page must cope
    return path


@functools.lru_cache(maxsize=4)
def session_frames(session: dt.date = SESSION, seed: int = 7, end: dt.time = dt.time(12, 30)) -> tuple:
    """Every engine frame of one session, in emit order (frozen models, so one cached copy is shared)."""
    rng = np.random.default_rng(seed)
    start_ns, end_ns = et_to_ns(session, dt.time(9, 22)), et_to_ns(session, end)
    open_ns, or_end_ns = et_to_ns(session, dt.time(9, 30)), et_to_ns(session, dt.time(9, 45))
    ticks = np.arange(start_ns, end_ns + 1, 10 * NS)
    price = _walk(rng, len(ticks), 5612.0)
    warmup_closes = list(5612.0 + np.cumsum(rng.normal(0, 1.2, 120)) * 0.3)  # prior sessions' 2-min closes
    pm_high, pm_low = 5621.25, 5603.5
    atr = 1.75
    levels: dict[str, float | None] = dict.fromkeys(LEVELS)
    closes = list(warmup_closes)
    frames: list = []
    alert_on: dict[tuple[str, str], bool] = {}
    approaches: dict[str, LevelSignal] = {}
    previous_d: dict[str, float] = {}
    ema, ema_count = None, 1
    for step_ns in range(start_ns + 30 * NS, end_ns + 1, 30 * NS):
        seen = price[ticks <= step_ns]
        spot = float(seen[-1])
        bar_start = start_ns + ((step_ns - start_ns - 1) // (120 * NS)) * 120 * NS  # the bar (start, start+2m] t is in
        in_bar = price[(ticks >= bar_start) & (ticks <= step_ns)]
        final = step_ns - bar_start == 120 * NS
        if final:
            closes.append(spot)
        if step_ns >= open_ns:
            levels["PM_HIGH"], levels["PM_LOW"] = pm_high, pm_low
        if step_ns >= or_end_ns:
            rth = price[(ticks >= open_ns) & (ticks < or_end_ns)]
            levels["OR_HIGH"], levels["OR_LOW"] = float(rth.max()), float(rth.min())
        levels["SMA_90"] = round(float(np.mean(closes[-90:])), 2)
        if final or ema is None:
            ema = closes[0] if ema is None else ema
            for close in closes[ema_count:]:
                ema += 2 / 21 * (close - ema)
            ema_count = len(closes)
        levels["EMA_20"] = round(float(ema), 2)
        frame = _frame(session, step_ns)
        frames.append(Candle(**frame, bar_start_ns=int(bar_start), open=float(in_bar[0]), high=float(in_bar.max()),
                             low=float(in_bar.min()), close=spot, volume=int(rng.integers(800, 4000)), final=final,
                             levels=[LevelLine(kind=k, price=v) for k, v in levels.items()]))
        if step_ns < open_ns:
            continue
        minutes = (step_ns - open_ns) / 60 / NS
        for kind, level in levels.items():
            if level is None:
                continue
            d_atr = (spot - level) / atr
            phase = minutes / 9 + LEVELS.index(kind)
            base = np.tanh(0.9 * np.sin(phase) + rng.normal(0, 0.1))
            streams = {name: float(np.clip(base * (1 - 0.12 * i) + rng.normal(0, 0.06), -1, 1))
                       for i, name in enumerate(STREAMS)}
            streams["sigma_d"] = None if kind == "EMA_20" else streams["sigma_d"]  # a tier gap the page must show
            frames.append(StreamUpdate(
                **frame, level_kind=kind, level_price=level, distance_atr=d_atr, tier="T2", streams=streams,
                composites={"alignment": float(np.mean([v for v in streams.values() if v is not None])),
                            "divergence": float(streams["sigma_f"] - streams["sigma_m"]), "dealer_alignment": None},
                derivatives={name: Derivatives(slope=0.9 * np.cos(phase) / 9, curvature=-0.9 * np.sin(phase) / 81,
                                               jerk=None) for name in ("sigma_p", "sigma_m")},
                state={"spot": spot, "atr": atr, "d_atr": d_atr, "minutes_since_open": minutes}))
            horizon = np.arange(1, 11)
            frames.append(ProjectionUpdate(**frame, level_kind=kind, horizon_bars=10, model_as_of=session - dt.timedelta(days=1),
                                           projections={name: QuantilePath(
                                               q10=list(np.clip(streams[name] * 0.9 ** horizon - 0.06 * horizon, -1, 1)),
                                               q50=list(np.clip(streams[name] * 0.9 ** horizon, -1, 1)),
                                               q90=list(np.clip(streams[name] * 0.9 ** horizon + 0.06 * horizon, -1, 1)))
                                               for name in ("sigma_p", "sigma_m", "sigma_f")}))
            for alert, fires, clears in (("continuation_up", streams["sigma_p"] > 0.5, streams["sigma_p"] < 0.3),
                                         ("reversal_risk_down", streams["sigma_p"] < -0.5, streams["sigma_p"] > -0.3)):
                active = alert_on.get((kind, alert), False)
                if fires and not active or clears and active:
                    alert_on[(kind, alert)] = not active
                    frames.append(Alert(**frame, level_kind=kind, alert=alert, state="cleared" if active else "fired",
                                        confidence=None if active else round(abs(streams["sigma_p"]), 2),
                                        bars_active=0 if active else 3,
                                        meaning="pressure keeps pushing price up" if alert == "continuation_up"
                                        else "pressure is turning down against the move"))
            moving_toward = kind in previous_d and abs(d_atr) < abs(previous_d[kind])
            previous_d[kind] = d_atr
            if abs(d_atr) <= 2.0 and (moving_toward or kind in approaches):
                direction = "UP" if d_atr < 0 else "DOWN"
                if kind not in approaches:
                    approach_id = f"{session}_{kind}_{int(round(level * 100))}_{step_ns}_{direction}"
                else:
                    approach_id = approaches[kind].approach_id
                approaches[kind] = _signal(rng, frame, session, approach_id, kind, level, direction, d_atr)
                frames.append(approaches[kind])
            elif kind in approaches:
                frames.append(approaches.pop(kind).model_copy(update={**frame, "approach_state": "ended"}))
    return tuple(frames)


def _signal(rng, frame: dict, session: dt.date, approach_id: str, kind: str, level: float, direction: str,
            d_atr: float) -> LevelSignal:
    p_break = float(np.clip(0.45 + 0.2 * np.tanh(-d_atr if direction == "UP" else d_atr) + rng.normal(0, 0.05),
                            0.05, 0.9))
    p_chop = 0.1
    probabilities = {"BREAK": p_break, "REJECT": 1 - p_break - p_chop, "CHOP": p_chop}
    base = {"BREAK": 0.42, "REJECT": 0.46, "CHOP": 0.12}
    outcomes = rng.choice(OUTCOMES, size=8, p=[p_break, 1 - p_break - p_chop, p_chop])
    analogs = [Analog(session=session - dt.timedelta(days=int(3 + 4 * i)), level_kind=kind, direction=direction,
                      similarity=round(0.93 - 0.03 * i, 3), weight=round(1.0 - 0.08 * i, 3), outcome=str(o),
                      mfe_atr=1.4, mae_atr=0.6, path_step_s=60, path_start_s=-600,
                      path_atr=_analog_path(rng, str(o), rng.uniform(1.0, 2.0)))
               for i, o in enumerate(outcomes)]
    lo = max(0.0, p_break - 0.13)
    hi = min(1.0, p_break + 0.13)
    bucket_low = min(int(p_break * 10), 9) / 10
    return LevelSignal(
        **frame, approach_id=approach_id, approach_state="active",
        level=LevelInfo(kind=kind, price=level, direction=direction, distance_atr=d_atr),
        retrieval=RetrievalAnswer(probabilities=probabilities, p_break_interval=(lo, hi), credible_level=0.9,
                                  effective_n=31.4, n_neighbours=50, base_rates=base,
                                  edge=p_break - base["BREAK"], insufficient_history=False, median_similarity=0.81),
        model=ModelAnswer(p_break=min(0.95, p_break + 0.04), p_chop=0.11, base_rate=0.47,
                          edge=min(0.95, p_break + 0.04) - 0.47, model_as_of=session - dt.timedelta(days=1)),
        smoothed={"BREAK": p_break, "REJECT": 1 - p_break - p_chop, "CHOP": p_chop},
        drivers={"break": [Driver(name=n, edge=round(0.09 - 0.02 * i, 3), percentile=round(0.88 - 0.1 * i, 2))
                           for i, n in enumerate(DRIVER_NAMES["break"])],
                 "reject": [Driver(name=n, edge=round(-0.07 + 0.02 * i, 3), percentile=round(0.7 - 0.1 * i, 2))
                            for i, n in enumerate(DRIVER_NAMES["reject"])]},
        analogs=analogs,
        context={"time_bucket": "T30_60", "attempt_index": 1, "touches_today": 0, "tier": "T2"},
        trust=Trust(index_as_of=session - dt.timedelta(days=1), model_as_of=session - dt.timedelta(days=1),
                    bucket=f"{bucket_low:.1f}–{bucket_low + 0.1:.1f}", bucket_hit_rate=round(bucket_low + 0.04, 3),
                    bucket_n=212))


def bound_socket(low: int = 4000, high: int = 4100) -> socket.socket:
    """A socket bound to a free port of this helper's range on 127.0.0.1 (bound here, so parallel tests never race
    for the same port between probing it and serving on it)."""
    for port in range(low, high):
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        return sock
    raise RuntimeError(f"no free port in {low}–{high - 1}")


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """Run `app` under uvicorn on 127.0.0.1 in a thread; yields its base URL and stops it on exit."""
    sock = bound_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"uvicorn-{port}")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


class HeadlessChromium:
    """Debian's chromium, headless, driven over the Chrome DevTools Protocol (no browser download, no driver)."""

    def __init__(self, profile_dir, width: int = 1600, height: int = 1000, binary: str = "chromium"):
        import subprocess

        self.process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--hide-scrollbars", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={profile_dir}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile_dir / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        import httpx
        import websockets.sync.client

        pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"]
        self._ws = websockets.sync.client.connect(pages[0]["webSocketDebuggerUrl"], max_size=None)
        self._id = 0
        self.console: list[str] = []
        self.call("Runtime.enable")
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params):
        import json

        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("method") == "Runtime.exceptionThrown":
                self.console.append(message["params"]["exceptionDetails"].get("exception", {}).get("description", ""))
            elif message.get("method") == "Runtime.consoleAPICalled" and message["params"]["type"] == "error":
                self.console.append(" ".join(str(a.get("value", a.get("description"))) for a in message["params"]["args"]))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 60, poll_s: float = 0.25):
        """Poll a JS expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression} stayed falsy for {timeout_s} s; console: {self.console[-5:]}")
            time.sleep(poll_s)

    def screenshot(self, path) -> None:
        import base64

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        try:
            if hasattr(self, "_ws"):
                self._ws.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(10)
            except Exception:
                self.process.kill()
