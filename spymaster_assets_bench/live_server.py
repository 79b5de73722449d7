"""Benchmark: the live server with 20 WebSocket clients watching a fast replay of a recorded session.

    uv run python -m spymaster_assets_bench.live_server [--clients 20]

The server runs in its own process (so its CPU is measured alone) over a recorded log of the realistic hand-built
session the tests use (09:22–12:30, ~5 000 engine frames, ~8 MB). Its replay source notes the monotonic time at
which each frame leaves the engine; the clients (asyncio, in this process) note when each arrives. Reported per
scenario: replay wall time, engine frames/s, frames delivered/s over all clients, dropped frames (from the clients'
final Status), send latency p50/p99/max (engine emit → frame received; CLOCK_MONOTONIC is shared by both
processes) over all frames and over level_signal frames, and the server's CPU (user+sys s / wall s).
Scenarios: speed 0 (as fast as possible: the stress case) and speed 60 (a paced replay of 12:00–12:30).

Measured 2026-11-29 with `nice -n 10` on the shared 2-core machine at load average ~14 (server and clients both
niced, so each got a small share of a core; the clients, 20 in one Python process, are the slowest party):
  speed 0:  4 978 engine frames in 13.7 s (365/s; the engine thread alone publishes a frame in 0.1 ms of CPU),
            delivered 998 frames/s over 20 clients, 86 140 frames dropped over the 20 clients (of 20 × 4 978: the
            clients could not keep up; superseded frames go first), latency p50 629 ms / p99 10.2 s (queueing),
            server CPU 2.4 s = 17 % of one core.
  speed 60: 852 engine frames in 30.4 s, 561 frames/s delivered, 0 dropped, latency p50 53 ms / p99 272 ms
            (level_signal p50 48 ms / p99 287 ms), server CPU 5.9 % of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import websockets.asyncio.client

from spymaster_assets.live.recorded import RecordedReplaySource, write_log
from spymaster_assets.live.server import run_server

KEY_FIELDS = ("type", "ts_ns", "level_kind", "bar_start_ns", "final", "approach_state", "alert")


_PREFIX_FIELDS = {k: re.compile(rf'"{k}":("[^"]*"|-?\d+|true|false|null)') for k in KEY_FIELDS if k != "level_kind"}
_KIND = re.compile(r'"(?:level_kind|level":\{"kind)":"([A-Z_0-9]+)"')


def prefix_key(text: str) -> str:
    """The key of one engine frame (one candle per 30 s step; per level one update of each kind, one alert frame per
    alert), read from the first 400 characters of a frame's JSON (every key field is there, in the models'
    field order), so 20 clients in one process measure the server rather than their own JSON parsing."""
    head = text[:400]
    values = []
    for name, pattern in _PREFIX_FIELDS.items():
        found = pattern.search(head)
        values.append("None" if found is None else json.loads(found.group(1)))
    kind = _KIND.search(head)
    return "|".join(str(v) for v in values) + f"|{None if kind is None else kind.group(1)}"


def model_key(message) -> str:
    """`prefix_key` of a frame before it is serialised (cheap: the engine thread computes it)."""
    kind = message.level.kind if message.type == "level_signal" else getattr(message, "level_kind", None)
    return "|".join(str(getattr(message, k, None)) for k in KEY_FIELDS if k != "level_kind") + f"|{kind}"


class TimedSource:
    """A RecordedReplaySource that notes when each frame leaves it, and writes those times when the replay ends."""

    def __init__(self, log: Path, emit_times: Path):
        self.inner = RecordedReplaySource(log)
        self.emit_times = emit_times

    def sessions(self):
        return self.inner.sessions()

    def replay(self, session, speed, start):
        times: dict[str, float] = {}
        try:
            for frame in self.inner.replay(session, speed, start):
                times[model_key(frame)] = time.monotonic()
                yield frame
        finally:
            self.emit_times.write_text(json.dumps(times))


async def client(url: str, start_replay: asyncio.Event, request: str | None, ready: asyncio.Event, counter: list):
    received: list[tuple[float, str, str]] = []
    async with websockets.asyncio.client.connect(url, max_size=None, max_queue=None) as ws:
        json.loads(await ws.recv())  # the join snapshot
        counter.append(1)
        ready.set()
        await start_replay.wait()
        if request is not None:
            await ws.send(request)
        replay_started = False
        while True:
            text = await ws.recv()
            at = time.monotonic()
            if text.startswith('{"type":"s'):  # status or snapshot: the few frames worth parsing whole
                frame = json.loads(text)
                if frame["type"] == "snapshot" and frame["status"]["running"]:
                    replay_started = True
                elif replay_started and frame["type"] == "status" and not frame["running"]:
                    return received, frame["dropped_frames"]
            elif replay_started and not text.startswith('{"type":"error"'):
                received.append((at, text[:400]))


async def scenario(url: str, clients: int, session: dt.date, speed: float, start: str, server: psutil.Process,
                   emit_times: Path) -> dict:
    emit_times.unlink(missing_ok=True)
    go, ready, counter = asyncio.Event(), asyncio.Event(), []
    request = json.dumps({"type": "replay", "session": str(session), "speed": speed, "start": start})
    tasks = [asyncio.create_task(client(url, go, request if i == 0 else None, ready, counter)) for i in range(clients)]
    while len(counter) < clients:
        await asyncio.sleep(0.05)
    cpu_before, began = server.cpu_times(), time.monotonic()
    go.set()
    results = await asyncio.gather(*tasks)
    wall = time.monotonic() - began
    cpu_after = server.cpu_times()
    for _ in range(100):
        if emit_times.exists():
            break
        await asyncio.sleep(0.05)
    emitted = json.loads(emit_times.read_text())
    keyed = [(at, prefix_key(head)) for received, _ in results for at, head in received]
    latency = np.array([at - emitted[key] for at, key in keyed])
    signals = np.array([at - emitted[key] for at, key in keyed if key.startswith("level_signal|")])
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    return {
        "speed": speed, "start": start, "clients": clients, "wall_s": round(wall, 2),
        "engine_frames": len(emitted), "engine_frames_per_s": round(len(emitted) / wall, 1),
        "delivered_frames": int(latency.size), "delivered_frames_per_s": round(latency.size / wall, 1),
        "dropped_frames": int(sum(dropped for _, dropped in results)),
        "server_cpu_s": round(cpu, 2), "server_cpu_pct_of_one_core": round(100 * cpu / wall, 1),
        "latency_ms": {"p50": round(1000 * float(np.percentile(latency, 50)), 2),
                       "p99": round(1000 * float(np.percentile(latency, 99)), 2),
                       "max": round(1000 * float(latency.max()), 2)},
        "signal_latency_ms": {"p50": round(1000 * float(np.percentile(signals, 50)), 2),
                              "p99": round(1000 * float(np.percentile(signals, 99)), 2)} if signals.size else None,
    }


def serve(log: Path, port: int, emit_times: Path) -> None:
    run_server(TimedSource(log, emit_times), "127.0.0.1", port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--port", type=int, default=4090)
    parser.add_argument("--serve", nargs=2, metavar=("LOG", "EMIT_TIMES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(Path(args.serve[0]), args.port, Path(args.serve[1]))
        return

    from spymaster_assets_tests.live_support import SESSION, session_frames  # the tests' realistic session

    with tempfile.TemporaryDirectory(prefix="live-server-bench-") as tmp:
        log, emit_times = Path(tmp) / "session.jsonl", Path(tmp) / "emitted.json"
        frames = session_frames()
        write_log(log, frames)
        print(f"session {SESSION}: {len(frames)} engine frames, {log.stat().st_size / 1e6:.1f} MB log", flush=True)
        process = subprocess.Popen([sys.executable, "-m", "spymaster_assets_bench.live_server", "--port",
                                    str(args.port), "--serve", str(log), str(emit_times)])
        try:
            base = f"http://127.0.0.1:{args.port}"
            for _ in range(300):
                try:
                    if httpx.get(base + "/healthz").text == "ok":
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            server = psutil.Process(process.pid)
            url = base.replace("http", "ws") + "/ws"
            results = [asyncio.run(scenario(url, args.clients, SESSION, 0, "09:22", server, emit_times)),
                       asyncio.run(scenario(url, args.clients, SESSION, 60, "12:00", server, emit_times))]
        finally:
            process.terminate()
            process.wait(10)
    for result in results:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
