"""Query latency: a one-shot `spymaster query` against `spymaster serve` (issue 13 item 4).

On a lake the daily bench built (`spymaster_assets_bench.daily`, same default home), for the
last session's anchors (time and level of each touch, so the answers are real, near-level ones):
- cold: `spymaster query` in a fresh process, in-process answer (imports + loading + search);
- the server: start until /api/health answers; the first query of a session (loads its index);
- warm: HTTP round trips to the running server (p50/p99) and the server's own answer time;
- end to end: `spymaster query --server URL` in a fresh process (target ≤ 1 s), and the CLI's
  import time on that path.

Measured 2026-11-29 on the shared 2-core machine at load average ~14, session 2024-12-09 (small),
33 anchor (time, level) pairs: cold one-shot `spymaster query` p50 78.8 s; `import
spymaster_assets.cli` (the client path) p50 1.5 s; server start 21 s; first query of a session
12.1 s; warm HTTP round trip p50 16.1 ms / p99 95.5 ms (server answer p50 10.1 / p99 85.0 ms);
`spymaster query --server` end to end in a fresh process p50 0.83 s / p99 0.99 s (target ≤ 1 s).

    uv run python -m spymaster_assets_bench.query [--home DIR] [--warm 200]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from spymaster_assets_bench.daily import DEFAULT_HOME


def percentiles(seconds: list[float]) -> str:
    ms = np.asarray(seconds) * 1e3
    return f"p50 {np.percentile(ms, 50):8.1f} ms  p99 {np.percentile(ms, 99):8.1f} ms  (n={len(ms)})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def queries_of(home: Path) -> tuple[str, list[tuple[str, str]]]:
    """The last indexed session and (HH:MM, level) of each of its anchors."""
    import polars as pl

    from spymaster_assets.lake import Lake
    from spymaster_assets.lib.calendar import ns_to_et

    lake = Lake(home / "lake")
    sessions = [s for s in lake.partitions("gold", "similarity_index") if lake.has_partition("silver", "events", s)]
    if not sessions:
        raise SystemExit(f"{home} holds no indexed session: run `python -m spymaster_assets_bench.daily --home {home}` first")
    session = sessions[-1]
    events = lake.read("silver", "events", session).filter(pl.col("ts_ns") >= 0).sort("ts_ns")
    asked = [(f"{ns_to_et(ts).time():%H:%M}", kind) for ts, kind in events.select("ts_ns", "level_kind").iter_rows()]
    return session, sorted(set(asked))


def cli(args: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "spymaster_assets.cli", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - began


def get(url: str) -> tuple[float, float]:
    """(round trip, the server's own answer time) in seconds."""
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        json.load(response)
        timing = response.headers.get("Server-Timing", "answer;dur=nan")
    return time.perf_counter() - began, float(timing.split("dur=")[1]) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME)
    parser.add_argument("--warm", type=int, default=200, help="warm HTTP queries")
    parser.add_argument("--cold", type=int, default=3, help="one-shot in-process CLI queries")
    parser.add_argument("--cli", type=int, default=10, help="CLI queries through the server")
    args = parser.parse_args()
    home = args.home.resolve()
    session, asked = queries_of(home)
    env = os.environ | {"SPYMASTER_HOME": str(home), "OMP_WAIT_POLICY": "passive"}
    env.pop("SPYMASTER_SERVER", None)
    print(f"Query latency on {home} (session {session}, {len(asked)} anchor times × levels)")

    def query_args(i: int) -> list[str]:
        clock, level = asked[i % len(asked)]
        return ["query", "--date", session, "--time", clock, "--level", level]

    cold = [cli(query_args(i), env) for i in range(args.cold)]
    print(f"  cold, one-shot in-process `spymaster query`:   {percentiles(cold)}")

    imports = []
    for _ in range(5):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import spymaster_assets.cli"], env=env, check=True)
        imports.append(time.perf_counter() - began)
    print(f"  CLI client path: python + import spymaster_assets.cli: {percentiles(imports)}")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    began = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "spymaster_assets.cli", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/health", timeout=2).close()
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit("spymaster serve exited")
                time.sleep(0.2)
        print(f"  server start until /api/health answers:       {time.perf_counter() - began:8.1f} s")

        def query_url(i: int) -> str:
            clock, level = asked[i % len(asked)]
            return f"{url}/api/query?date={session}&time={clock}&level={level}"

        first, first_server = get(query_url(0))
        print(f"  first query of the session (loads its index): {first * 1e3:8.1f} ms  "
              f"(server {first_server * 1e3:.1f} ms)")
        warm = [get(query_url(i)) for i in range(args.warm)]
        print(f"  warm HTTP round trip:                          {percentiles([w[0] for w in warm])}")
        print(f"  warm, the server's answer time:                {percentiles([w[1] for w in warm])}")
        through = [cli([*query_args(i), "--server", url], env) for i in range(args.cli)]
        print(f"  end to end `spymaster query --server` (fresh process): {percentiles(through)}  target ≤ 1 s")
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
