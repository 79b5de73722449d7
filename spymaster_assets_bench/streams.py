"""Pentaview benchmark on a lake built by the pipeline over the synthetic (planted) market.

Reads `BENCH_HOME` (default: the demo's home, `$SPYMASTER_HOME` or ./.spymaster); run `spymaster demo`
first (any scale: the state grid — 30 s bars × active levels — and so the streams' size are the same
at every scale). Numbers, not asserts:

1. streams of the largest session (all levels): `compute_streams` wall time, in a fresh subprocess
   so its peak RSS is its own (reading the inputs included, as the asset does);
2. projection inference per level update: `project(models, last LOOKBACK + 2 rows of one level,
   latest_only=True)` — the live engine's call — p50/p99 over every (bar, level) of the last
   session with models (target p99 ≤ 2 ms);
3. held-out projection quality: the `reports/projection_evaluation` numbers recomputed from the
   lake (q10–q90 coverage, target 0.75–0.85; path R² and endpoint MAE vs the flat forecast);
4. alert hit rates vs base rates (the `reports/stream_alerts` numbers recomputed from the lake).
"""

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # before lightgbm loads OpenMP

import numpy as np
import polars as pl

INFERENCE_TARGET_MS = 2.0
COVERAGE_TARGET = (0.75, 0.85)


def bench_home() -> Path:
    from spymaster_assets.resources import spymaster_home

    return Path(os.environ.get("BENCH_HOME", spymaster_home()))


def stage_streams(home: Path, session: str) -> dict:
    """In the subprocess: read silver/state and the as-of stats, compute the streams, report."""
    from spymaster_assets.lake import Lake
    from spymaster_assets.lib.streams import compute_streams

    lake = Lake(home / "lake")
    began = time.perf_counter()
    state = lake.read("silver", "state", session)
    stats = lake.read("gold", "stream_normalization", session)
    read_s = time.perf_counter() - began
    began = time.perf_counter()
    streams = compute_streams(state, stats)
    compute_s = time.perf_counter() - began
    return {"session": session, "state_rows": state.height, "state_columns": state.width, "stream_rows": streams.height,
            "levels": streams["level_kind"].n_unique(), "read_s": read_s, "compute_s": compute_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def streams_cost(home: Path, lake) -> dict:
    sessions = [d for d in lake.partitions("gold", "stream_normalization") if lake.has_partition("silver", "state", d)]
    largest = max(sessions, key=lambda d: lake.scan("silver", "state", d).select(pl.len()).collect().item())
    out = subprocess.run([sys.executable, "-m", "spymaster_assets_bench.streams", "--stage", str(home), largest],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def inference_latency(lake) -> dict:
    from spymaster_assets.lib.stream_projections import LOOKBACK, project
    from spymaster_assets.ml.projections import load_projectors

    session = next((d for d in reversed(lake.partitions("ml", "projection_models")) if load_projectors(lake, d)), None)
    if session is None:
        return {"note": "no session has projection models (too little history)"}
    models = load_projectors(lake, session)
    streams = lake.read("gold", "streams", session).sort("t_ns")
    project(models, streams.head(LOOKBACK + 2).drop("session"), latest_only=True)  # compile the trees once
    wall, cpu = [], []
    for (level,), rows in streams.group_by("level_kind"):
        rows = rows.drop("session")
        for end in range(LOOKBACK + 2, rows.height + 1):
            recent = rows.slice(end - LOOKBACK - 2, LOOKBACK + 2)
            began, began_cpu = time.perf_counter(), time.process_time()
            project(models, recent, latest_only=True)
            wall.append(time.perf_counter() - began)
            cpu.append(time.process_time() - began_cpu)
    ms, cpu_ms = np.asarray(wall) * 1e3, np.asarray(cpu) * 1e3
    return {"session": session, "streams": models.streams, "updates": ms.size, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()), "target_p99_ms": INFERENCE_TARGET_MS,
            "cpu_p50_ms": float(np.percentile(cpu_ms, 50)), "cpu_p99_ms": float(np.percentile(cpu_ms, 99)),
            "load_average": os.getloadavg()[0]}


def main() -> None:
    if len(sys.argv) > 3 and sys.argv[1] == "--stage":
        print(json.dumps(stage_streams(Path(sys.argv[2]), sys.argv[3])))
        return
    from spymaster_assets.gold.streams import stream_alerts_report
    from spymaster_assets.lake import Lake
    from spymaster_assets.ml.projections import evaluation_report

    home = bench_home()
    lake = Lake(home / "lake")
    if not lake.partitions("gold", "streams"):
        raise SystemExit(f"no gold/streams in {home}: run `spymaster demo` first (or set BENCH_HOME)")
    print(f"Pentaview benchmark on {home} ({len(lake.partitions('gold', 'streams'))} sessions of streams)")

    cost = streams_cost(home, lake)
    print(f"\n1. streams, session {cost['session']}: {cost['state_rows']} state rows × {cost['state_columns']} columns → "
          f"{cost['stream_rows']} stream rows ({cost['levels']} levels): compute {cost['compute_s'] * 1e3:.0f} ms "
          f"(+ read {cost['read_s'] * 1e3:.0f} ms), peak RSS {cost['peak_rss_mb']:.0f} MB (process incl. imports)")

    latency = inference_latency(lake)
    if "note" in latency:
        print(f"\n2. projection inference: {latency['note']}")
    else:
        print(f"\n2. projection inference per level update ({len(latency['streams'])} streams × 9 quantile models, "
              f"session {latency['session']}, {latency['updates']} updates): p50 {latency['p50_ms']:.2f} ms, "
              f"p99 {latency['p99_ms']:.2f} ms (target ≤ {INFERENCE_TARGET_MS:.0f} ms: "
              f"{latency['p99_ms'] / INFERENCE_TARGET_MS:.2f}× of it), max {latency['max_ms']:.2f} ms; CPU time "
              f"p50 {latency['cpu_p50_ms']:.2f} ms, p99 {latency['cpu_p99_ms']:.2f} ms "
              f"(load average {latency['load_average']:.1f} on {os.cpu_count()} cores: wall time includes waiting for a core)")

    report = evaluation_report(lake)
    if not report["sessions"]:
        print(f"\n3. projection quality: {report['note']}")
    else:
        print(f"\n3. held-out projection quality over {report['sessions']} sessions ({report['first_session']} … "
              f"{report['last_session']}), target q10–q90 coverage {COVERAGE_TARGET[0]}–{COVERAGE_TARGET[1]}:")
        print(f"   {'stream':<8} {'points':>8} {'coverage':>9} {'path R²':>8} {'flat R²':>8} {'Δ R²':>7} "
              f"{'end MAE':>8} {'flat MAE':>9} {'band':>6}")
        for stream, m in [*report["by_stream"].items(), ("pooled", report["pooled"])]:
            print(f"   {stream:<8} {m['n_points']:>8} {m['coverage_q10_q90']:>9.3f} {m['path_r2']:>8.3f} "
                  f"{m['path_r2_flat']:>8.3f} {m['change_r2']:>7.3f} {m['endpoint_mae']:>8.3f} "
                  f"{m['endpoint_mae_flat']:>9.3f} {m['mean_band_width']:>6.3f}")

    alerts = stream_alerts_report(lake)
    print(f"\n4. alerts over {alerts['sessions']} sessions ({alerts['outcome']['horizon_min']} min, "
          f"{alerts['outcome']['move_atr']} ATR): hit rate vs base rate")
    for a in alerts["alerts"]:
        if a["n_onsets"]:
            lift = a["hit_rate"] / a["base_rate"] if a["base_rate"] else float("nan")
            print(f"   {a['alert']:<28} n {a['n_onsets']:>4}  hit {a['hit_rate']:.2f}  base {a['base_rate']:.2f}  "
                  f"ratio {lift:.2f}")
        else:
            print(f"   {a['alert']:<28} n    0")


if __name__ == "__main__":
    main()
