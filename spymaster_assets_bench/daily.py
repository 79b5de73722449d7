"""The scheduled daily run of one session, broken down by step (issue 13 item 3).

What the 16:30 ET schedule does for a session D: the daemon launches a run of `daily_market_job`
with partition D in a new process, which imports the code location and executes every step in
that process (in_process_executor): D's bronze → silver → gold → ml partitions, then the
warehouse views and the dbt marts. This bench does exactly that for `--sessions` consecutive
`small` synthetic sessions (oldest first, one fresh process each, a persistent instance), so the
last session runs as a real day does, with history before it and the dbt partial-parse state of
the previous day.

Reported per session: process start + imports, run setup/teardown, every step's wall time, and
the fixed part — process, imports, run overhead, warehouse views, dbt marts — as a share of the
whole. Target (issue 13): fixed ≤ 1/3 of the run. Reports (group "reports") are not in the daily
job; they run on their own weekly schedule.

    uv run python -m spymaster_assets_bench.daily [--sessions 3] [--scale small] [--home DIR]

Re-running on an existing home re-materializes its sessions (dbt then starts from the home's parse state).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START = dt.date(2024, 12, 5)
DEFAULT_HOME = Path(tempfile.gettempdir()) / "spymaster-bench-daily"  # the query bench reads the same lake
FIXED_STEP_LAYERS = ("warehouse", "marts")  # warehouse__lake_views, marts_dbt: rebuilt whatever the session's size


def run_one_session(home: Path, session: str, started_ns: int) -> dict:
    """In the child process: import the code location and run the daily job for `session`, as a
    run worker launched by the schedule does. Returns the timings."""
    imported = time.time_ns()
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    from spymaster_assets.definitions import build_definitions
    from spymaster_assets.resources import resources_from_env

    defs = build_definitions(resources_from_env(dict(os.environ)))
    job = defs.resolve_job_def("daily_market_job")
    loaded = time.time_ns()
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(os.environ["DAGSTER_HOME"])) as instance:
        result = job.execute_in_process(instance=instance, partition_key=session, raise_on_error=False,
                                        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
        ran = time.time_ns()
        steps: dict[str, float] = {}
        opened: dict[str, float] = {}
        kinds = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
        for entry in instance.all_logs(result.run_id, of_type=kinds):
            event = entry.dagster_event
            if event.event_type == dg.DagsterEventType.STEP_START:
                opened[event.step_key] = entry.timestamp
            else:
                steps[event.step_key] = entry.timestamp - opened[event.step_key]
        failed = sorted({e.step_key for e in result.all_events if e.is_step_failure})
    return {"session": session, "success": result.success, "failed_steps": failed,
            "interpreter_s": (imported - started_ns) / 1e9, "imports_and_definitions_s": (loaded - imported) / 1e9,
            "run_s": (ran - loaded) / 1e9, "steps_s": steps}


def step_kind(step_key: str) -> str:
    return "fixed" if step_key.split("__")[0].split("_")[0] in FIXED_STEP_LAYERS else "compute"


def breakdown(timing: dict, wall_s: float) -> dict:
    steps = timing["steps_s"]
    compute = sum(v for k, v in steps.items() if step_kind(k) == "compute")
    fixed_steps = {k: v for k, v in steps.items() if step_kind(k) == "fixed"}
    run_overhead = timing["run_s"] - sum(steps.values())
    process = wall_s - timing["imports_and_definitions_s"] - timing["run_s"]  # interpreter start + exit
    fixed = process + timing["imports_and_definitions_s"] + run_overhead + sum(fixed_steps.values())
    return {"wall_s": wall_s, "compute_s": compute, "fixed_s": fixed, "fixed_share": fixed / wall_s,
            "process_start_exit_s": process, "imports_and_definitions_s": timing["imports_and_definitions_s"],
            "run_overhead_s": run_overhead, "fixed_steps_s": fixed_steps}


def run_session_in_fresh_process(home: Path, session: str, env: dict[str, str]) -> dict:
    out = home / f"timing-{session}.json"
    began = time.perf_counter()
    log = home / f"run-{session}.log"
    with open(log, "w") as sink:
        subprocess.run([sys.executable, "-m", "spymaster_assets_bench.daily", "--child", session, "--home", str(home),
                        "--started-ns", str(time.time_ns())], env=env, check=True, stdout=sink, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - began
    timing = json.loads(out.read_text())
    return timing | {"breakdown": breakdown(timing, wall)}


def print_session(result: dict) -> None:
    b = result["breakdown"]
    status = "ok" if result["success"] else f"FAILED {result['failed_steps']}"
    print(f"\n{result['session']}  {status}  wall {b['wall_s']:.1f} s = compute {b['compute_s']:.1f} s + fixed "
          f"{b['fixed_s']:.1f} s  (fixed share {b['fixed_share']:.0%}; target ≤ 33%)")
    print(f"  {'process start + exit':<40} {b['process_start_exit_s']:6.2f} s  fixed")
    print(f"  {'imports + definitions':<40} {b['imports_and_definitions_s']:6.2f} s  fixed")
    print(f"  {'run setup/teardown (event log, I/O mgr)':<40} {b['run_overhead_s']:6.2f} s  fixed")
    for step, seconds in sorted(result["steps_s"].items(), key=lambda kv: -kv[1]):
        print(f"  {step:<40} {seconds:6.2f} s  {step_kind(step)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--scale", default=os.environ.get("BENCH_SCALE", "small"))
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--started-ns", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        timing = run_one_session(args.home, args.child, args.started_ns)
        (args.home / f"timing-{args.child}.json").write_text(json.dumps(timing, indent=1))
        return

    from spymaster_assets.cli import prepare_dagster_home, project_env
    from spymaster_assets.lib.calendar import trading_sessions

    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    prepare_dagster_home(home)
    env = project_env(home, SPYMASTER_SOURCE="synthetic", SPYMASTER_SYNTHETIC_SCALE=args.scale,
                      OMP_WAIT_POLICY="passive")
    sessions = [d.isoformat() for d in trading_sessions(START)[:args.sessions]]
    print(f"Daily run of daily_market_job, one fresh process per session ({args.scale} synthetic), home {home}")
    results = []
    for session in sessions:
        results.append(run_session_in_fresh_process(home, session, env))
        print_session(results[-1])
    last = results[-1]["breakdown"]
    print(f"\nSteady state (last session, with history): wall {last['wall_s']:.1f} s, fixed {last['fixed_s']:.1f} s "
          f"= {last['fixed_share']:.0%} of the run (target ≤ 33%)")
    (home / "daily_bench.json").write_text(json.dumps(results, indent=1))
    print(f"  details: {home / 'daily_bench.json'}")


if __name__ == "__main__":
    main()
