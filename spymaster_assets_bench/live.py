"""Live replay cost: one `realistic` synthetic session replayed 09:22–12:30 at speed 0 with signals.

The lake: `BENCH_TINY` earlier synthetic sessions at the tiny scale (they only feed the as-of
artifacts — stream normalization, similarity index, model, trust table) and the benchmark
session at the `realistic` scale (≥ 5 M book updates, options on), all through the daily job
(not timed; reused when the lake exists: `BENCH_HOME`, default /tmp/spymaster-bench-live).

Reported: events replayed and their rate, wall time and the factor over real time (target
≥ 50× for the 3 h 8 min), per-boundary engine compute p50/p99 (the engine's part of "signal
latency from the 30 s boundary", target ≤ 50 ms), message counts, and where a boundary's time
goes (bars/levels, the state row, streams/alerts, signals). Numbers, not asserts.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("POLARS_MAX_THREADS", "1")

import numpy as np

SESSION = dt.date(2024, 12, 10)
HOME = Path(os.environ.get("BENCH_HOME", "/tmp/spymaster-bench-live"))
TINY_FIRST = dt.date(2024, 11, 18)  # ≥ 5 labelled sessions before the model's window end: the model serves


def build_lake(home: Path) -> None:
    import dagster as dg

    from spymaster_assets.definitions import build_definitions
    from spymaster_assets_tests.helpers import resources_for, run_range

    if (home / "lake" / "gold" / "stream_normalization" / f"date={SESSION}").exists():
        return
    os.environ.setdefault("DAGSTER_HOME", str(home / "dagster_home"))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    for scale, first, last in (("tiny", TINY_FIRST, SESSION - dt.timedelta(days=1)), ("realistic", SESSION, SESSION)):
        began = time.perf_counter()
        defs = build_definitions(resources_for(home, source="synthetic", synthetic_scale=scale))
        with dg.instance_for_test() as instance:
            result = run_range(defs, first.isoformat(), last.isoformat(), instance)
        assert result.success, [e.message for e in result.all_events if e.is_failure][:3]
        print(f"  {scale} sessions {first}..{last} through the daily job in {time.perf_counter() - began:.0f} s (not timed)")


def main() -> None:
    from spymaster_assets.lake import Lake
    from spymaster_assets.lib.calendar import ns_to_et
    from spymaster_assets.live.analogs import SessionArtifacts
    from spymaster_assets.live.engine import LiveEngine, run
    from spymaster_assets.live.replay import Replay, read_session

    build_lake(HOME)
    lake = Lake(HOME / "lake")
    began = time.perf_counter()
    data = read_session(lake, SESSION)
    artifacts = SessionArtifacts.load(lake, SESSION)
    loaded = time.perf_counter() - began
    replay = Replay(data, speed=0)
    engine = LiveEngine(data, artifacts)
    began = time.perf_counter()
    counts: Counter = Counter()
    replayed_events = 0
    for events in replay.slices():
        replayed_events += events.n_events
        engine.feed(events)
        if events.end_ns % 30_000_000_000 == 0:
            counts.update(m.type for m in engine.step(events.end_ns, emit=not events.warmup))
            if len(engine.step_seconds) % 60 == 0 and engine.step_seconds:
                recent = np.array(engine.step_seconds[-60:]) * 1e3
                print(f"    … {ns_to_et(events.end_ns):%H:%M:%S} after {time.perf_counter() - began:.0f} s: last 60 "
                      f"boundaries p50 {np.percentile(recent, 50):.0f} ms, p99 {np.percentile(recent, 99):.0f} ms", flush=True)
    wall = time.perf_counter() - began
    steps = np.array(engine.step_seconds) * 1e3
    cpu = np.array(engine.step_cpu_seconds) * 1e3
    load = os.getloadavg()
    real_s = (replay.end_ns - replay.start_ns) / 1e9
    print(f"live replay of {SESSION} (tier {data.tier}), 09:22–12:30 at speed 0 with signals")
    print(f"  tables: {', '.join(f'{k} {v.height:,}' for k, v in data.tables.items())}")
    print(f"  read bronze + load as-of artifacts: {loaded:.1f} s")
    print(f"  events replayed: {replayed_events:,} in {wall:.1f} s = {replayed_events / wall:,.0f} events/s")
    print(f"  {real_s / 60:.0f} min of market in {wall:.1f} s: {real_s / wall:.1f}× real time (target ≥ 50×)")
    print(f"  per-boundary compute: p50 {np.percentile(steps, 50):.0f} ms, p99 {np.percentile(steps, 99):.0f} ms, "
          f"max {steps.max():.0f} ms over {steps.size} boundaries (target ≤ 50 ms)")
    print(f"  the same in process CPU time: p50 {np.percentile(cpu, 50):.0f} ms, p99 {np.percentile(cpu, 99):.0f} ms "
          f"(load average {load[0]:.1f} on {os.cpu_count()} cores while measured)")
    print(f"  messages: {dict(counts)}")
    print("  boundary time by phase: " + ", ".join(f"{k} {v / len(steps) * 1e3:.0f} ms" for k, v in engine.phase_seconds.items()))
    print(f"  model serving: {'yes, as of ' + artifacts.model.model_as_of if artifacts.model and artifacts.model.predictor else 'no model for this session'}; "
          f"projection models: {sorted(artifacts.projectors) or 'none'}")


if __name__ == "__main__":
    main()
