"""A 20-session tiny backfill on the scale-out stack with 1, then 2 Celery workers.

Each configuration gets a fresh stack (spymaster_assets/stack.py: Postgres, Redis, the S3 lake,
the workers, the daemon) and the same asset backfill `make stack-backfill` submits. Reported:
wall time from submitting the backfill to its last run ending, the speed-up of 2 workers over 1,
and the overhead per run — a run's time from launch (handed to Celery) to end, less the time
spent inside its steps (queueing, the run worker's start-up, event writes to Postgres), and the
worker time between runs (the daemon's backfill and queue ticks), per run.

    nice -n 10 uv run python -m spymaster_assets_bench.scale     (BENCH_SESSIONS, BENCH_WORKERS)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from spymaster_assets.lib.calendar import trading_sessions
from spymaster_assets.stack import Stack, backfill_on, running

FIRST_SESSION = dt.date(2024, 12, 5)
SESSIONS = int(os.environ.get("BENCH_SESSIONS", 20))
WORKER_COUNTS = [int(n) for n in os.environ.get("BENCH_WORKERS", "1,2").split(",")]


def measure(workers: int, sessions: list[str], scratch: Path) -> dict:
    stack = Stack(scratch / f"stack-{workers}", workers=workers, lake="s3")
    began = time.monotonic()
    with running(stack):
        started = time.monotonic() - began
        outcome = backfill_on(stack, sessions, timeout=4 * 3600)
    runs = [run for run in outcome.runs if run["seconds"] is not None]
    overheads = [run["seconds"] - run["step_seconds"] for run in runs]
    return {
        "workers": workers, "sessions": len(sessions), "status": outcome.status, "stack_start_s": started,
        "wall_s": outcome.seconds, "runs": len(outcome.runs),
        "failed_runs": sum(run["status"] != "SUCCESS" for run in outcome.runs),
        "runs_per_worker": {w: sum(run["worker"] == w for run in outcome.runs) for w in sorted({r["worker"] for r in runs}, key=str)},
        "run_s_mean": statistics.mean(run["seconds"] for run in runs),
        "steps_s_total": sum(run["step_seconds"] for run in runs),
        "overhead_per_run_s": statistics.mean(overheads), "overhead_per_run_s_median": statistics.median(overheads),
        "worker_busy_fraction": sum(run["seconds"] for run in runs) / (outcome.seconds * workers),
        # worker time not inside any run (the daemon's backfill and queue ticks between waves), per run
        "idle_per_run_s": (outcome.seconds * workers - sum(run["seconds"] for run in runs)) / len(runs),
    }


def main() -> None:
    # Both configurations may use both cores: one worker alone runs polars on two threads, as a
    # single-machine run does; two workers share them.
    os.environ["POLARS_MAX_THREADS"] = os.environ.get("BENCH_POLARS_THREADS", "2")
    sessions = [d.isoformat() for d in trading_sessions(FIRST_SESSION)[:SESSIONS]]
    scratch = Path(tempfile.mkdtemp(prefix="spymaster-bench-scale-"))
    print(f"scale benchmark: {len(sessions)} tiny sessions {sessions[0]} … {sessions[-1]}, workers {WORKER_COUNTS}, "
          f"stacks under {scratch}")
    out = Path("bench_results")
    out.mkdir(exist_ok=True)
    results = []
    for workers in WORKER_COUNTS:
        result = measure(workers, sessions, scratch)
        results.append(result)
        (out / "scale.json").write_text(json.dumps(results, indent=2))
        print(f"  {workers} worker(s): wall {result['wall_s']:.1f} s for {result['runs']} runs ({result['status']}, "
              f"{result['failed_runs']} failed), run {result['run_s_mean']:.1f} s mean, overhead per run "
              f"{result['overhead_per_run_s']:.1f} s (median {result['overhead_per_run_s_median']:.1f}) + idle between "
              f"runs {result['idle_per_run_s']:.1f} s, steps "
              f"{result['steps_s_total']:.0f} s in all, workers busy {result['worker_busy_fraction']:.0%}, "
              f"runs per worker {result['runs_per_worker']}; stack start {result['stack_start_s']:.0f} s")
    if len(results) > 1:
        base = results[0]
        for result in results[1:]:
            print(f"  speed-up {result['workers']} vs {base['workers']} worker(s): {base['wall_s'] / result['wall_s']:.2f}×")


if __name__ == "__main__":
    main()
