"""`spymaster`: the demo, summaries and benchmarks from the command line."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import click

# Before polars, FAISS and LightGBM are imported (the demo runs the pipeline in this process):
# OpenMP threads spin-wait and run 5x slower on 2 cores unless passive.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("POLARS_MAX_THREADS", "2")

DEMO_START = dt.date(2024, 12, 5)  # ten sessions spanning the ESZ4 → ESH5 roll (2024-12-12)
DEMO_SESSIONS = 10
DAGSTER_PORT = 3070
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
QUERY_PORT = 3071  # `spymaster serve`; the CLI finds it through --server / SPYMASTER_SERVER
LEVEL_CHOICE = click.Choice(["PM_HIGH", "PM_LOW", "OR_HIGH", "OR_LOW", "SMA_90", "EMA_20"])


def spymaster_home() -> Path:
    # Imported here, not at module level: resources imports Dagster (seconds), and `spymaster query
    # --server` must start in a fraction of a second.
    from .resources import spymaster_home as home

    return home()


def prepare_dagster_home(home: Path) -> Path:
    """A persistent DAGSTER_HOME under the project home, so the UI sees the demo's runs."""
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    from .resources import REPO_ROOT

    template = REPO_ROOT / "dagster.yaml"
    if not (dagster_home / "dagster.yaml").exists():
        shutil.copy(template, dagster_home / "dagster.yaml")
    return dagster_home


def project_env(home: Path, **overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env |= {
        "SPYMASTER_HOME": str(home),
        "DAGSTER_HOME": str(prepare_dagster_home(home)),
        "OMP_WAIT_POLICY": "passive",
        "POLARS_MAX_THREADS": env.get("POLARS_MAX_THREADS", "2"),
    }
    return env | overrides


@click.group()
def main() -> None:
    """Spymaster: ES level-approach research platform."""


@main.command()
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), default=DEMO_START.isoformat(), show_default=True)
@click.option("--sessions", "n_sessions", type=int, default=DEMO_SESSIONS, show_default=True)
@click.option("--scale", type=click.Choice(["tiny", "small", "realistic"]), default="small", show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
def demo(start: dt.datetime, n_sessions: int, scale: str, seed: int) -> None:
    """Generate a synthetic market, backfill the asset graph over it through Dagster, summarize."""
    from .lib.calendar import trading_sessions

    home = spymaster_home()
    sessions = trading_sessions(start.date())[:n_sessions]
    env = project_env(
        home, SPYMASTER_SOURCE="synthetic", SPYMASTER_SYNTHETIC_SCALE=scale, SPYMASTER_SYNTHETIC_SEED=str(seed)
    )
    click.echo(f"Backfilling {len(sessions)} sessions {sessions[0]} … {sessions[-1]} "
               f"(synthetic, scale={scale}, seed={seed}), one Dagster run per session, then one for the "
               f"unpartitioned assets, recorded in {env['DAGSTER_HOME']}")
    began = time.perf_counter()
    failed = backfill_session_by_session(env, sessions)
    click.echo(f"  done in {time.perf_counter() - began:.1f} s")
    if failed:
        click.echo(f"  failed: {', '.join(failed)} (the other sessions were built; see the runs in the UI)", err=True)
    _print_summary(home, sessions)
    _print_demo_query(home, sessions[-1])
    _print_demo_streams(home, sessions[-1])
    click.echo(
        "\nOpen the Dagster UI on the same data:\n"
        f"  SPYMASTER_HOME={home} DAGSTER_HOME={home / 'dagster'} "
        f"uv run dagster dev -h 127.0.0.1 -p {DAGSTER_PORT}\n"
        f"  (or `make dev`) then browse http://127.0.0.1:{DAGSTER_PORT}"
    )
    if failed:
        raise SystemExit(f"{len(failed)} demo run(s) failed: {', '.join(failed)}")


def backfill_session_by_session(env: dict[str, str], sessions: list[dt.date]) -> list[str]:
    """Materialize every session asset one session per run, oldest first, then the unpartitioned
    assets (warehouse views, model, marts, reports) once, in this process, against the persistent
    instance in env["DAGSTER_HOME"]: the UI lists each run with its partition, materializations and
    check results, exactly as for a UI backfill. A failed session fails only its own run.

    In-process rather than through the backfill daemon: the daemon launches 2–4 runs a session
    (whatever is ready at each iteration), each a new process that loads the code location
    again. Measured on the shared 2-core machine: two daemon backfills of 1 + 3 tiny sessions
    took 518 s (10 runs); this loop takes ≈ 30 s a small session.
    Returns the names of the runs that failed."""
    log = Path(env["DAGSTER_HOME"]) / "demo.log"
    click.echo(f"  (dbt, MLflow and warning output: {log})")
    failed = []
    with output_to(log) as terminal:
        import dagster as dg
        from dagster._core.instance.ref import InstanceRef

        from .definitions import build_definitions
        from .resources import resources_from_env

        defs = build_definitions(resources_from_env(env))
        graph = defs.resolve_asset_graph()
        job = defs.resolve_implicit_global_asset_job_def()
        keys = graph.get_all_asset_keys()
        per_session = [key for key in keys if graph.get(key).is_partitioned]
        aggregates = [key for key in keys if not graph.get(key).is_partitioned]
        steps = [(session.isoformat(), per_session) for session in sessions] + [("unpartitioned", aggregates)]
        with dg.DagsterInstance.from_ref(InstanceRef.from_dir(env["DAGSTER_HOME"])) as instance:
            for number, (name, selection) in enumerate(steps, start=1):
                began = time.perf_counter()
                result = job.execute_in_process(
                    instance=instance, asset_selection=selection, raise_on_error=False,
                    partition_key=None if name == "unpartitioned" else name, tags={"spymaster/demo": "true"},
                    run_config=QUIET_CONSOLE)  # the event log is in the instance (UI); print progress only
                failures = sorted({e.step_key for e in result.all_events if e.is_step_failure})
                click.echo(f"  [{number}/{len(steps)}] {name:<13} {'ok' if result.success else 'FAILED'} "
                           f"in {time.perf_counter() - began:5.1f} s  run {result.run_id[:8]}"
                           + (f"  failed steps: {', '.join(failures)}" if failures else ""), file=terminal)
                if not result.success:
                    failed.append(name)
    return failed


@contextmanager
def output_to(path: Path) -> Iterator[TextIO]:
    """Send this process's stdout and stderr — subprocesses' (dbt) included — to `path`; yield the terminal."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            terminal.close()


def _print_summary(home: Path, sessions: list[dt.date]) -> None:
    import polars as pl

    from .lake import Lake
    from .summary import bronze_summary, research_summary

    lake = Lake(home / "lake")
    with pl.Config(tbl_rows=50, tbl_cols=20, tbl_width_chars=200, tbl_hide_dataframe_shape=True):
        click.echo("\nBronze, per session (rows per table):")
        click.echo(bronze_summary(lake, sessions))
        click.echo("\nSilver and gold, per session (anchors by primary 4-min label; history in the as-of index):")
        click.echo(research_summary(lake, sessions))
    report = lake.root / "reports" / "retrieval_evaluation" / "report.json"
    if report.exists():
        _print_evaluation(report)


def _print_evaluation(path: Path) -> None:
    import json

    report = json.loads(path.read_text())
    pooled, oracle = report.get("pooled"), report.get("oracle", {})
    if not pooled:
        click.echo(f"\nRetrieval evaluation: {report.get('note', 'nothing to evaluate')}")
        return
    click.echo(
        f"\nRetrieval, walk-forward over {report['sessions']} sessions ({report['n']} episodes, each answered only "
        f"by earlier sessions):\n"
        f"  p(BREAK) Brier {pooled['brier']:.4f} vs base rate {pooled['brier_base']:.4f} (skill {pooled['brier_skill']:+.3f}), "
        f"ECE {pooled['ece']:.3f} vs {pooled['ece_base']:.3f}, AUC {pooled['auc']:.3f}"
    )
    if oracle.get("oracle_auc") is not None:
        click.echo(f"  simulator's true p_break on the same {oracle['n_matched']} episodes: AUC {oracle['oracle_auc']:.3f} "
                   f"→ retrieval recovers {oracle['edge_ratio']:.0%} of the oracle's edge over a coin flip "
                   f"(AUC ratio {oracle['auc_ratio']:.2f})")
    click.echo(f"  report: {path}")


def _print_demo_query(home: Path, session: dt.date) -> None:
    """One real answer from the demo data: the last session's first opening-range touch (or first touch)."""
    import polars as pl

    from .lake import Lake
    from .lib.calendar import ns_to_et

    lake = Lake(home / "lake")
    if not lake.has_partition("silver", "events", session):
        return
    events = lake.read("silver", "events", session).sort("ts_ns")
    if events.height == 0:
        return
    preferred = events.filter(pl.col("level_kind").str.starts_with("OR_"))
    event = (preferred if preferred.height else events).row(0, named=True)
    clock = ns_to_et(event["ts_ns"]).time().replace(second=0, microsecond=0)
    click.echo(f"\nA query from the demo data (`spymaster query --date {session} --time {clock:%H:%M} "
               f"--level {event['level_kind']}`):")
    print_answer(full_answer(lake, session, clock, event["level_kind"], neighbours=5))


def _print_demo_streams(home: Path, session: dt.date) -> None:
    """One level's streams and projection from the demo data: the last session's level longest in approach."""
    from .gold.streams import demo_streams_level, streams_answer
    from .lake import Lake

    lake = Lake(home / "lake")
    if not lake.has_partition("gold", "streams", session):
        return
    level_kind, clock = demo_streams_level(lake, session)
    click.echo(f"\nStreams and projection from the demo data (`spymaster streams --date {session} --level {level_kind} "
               f"--at {clock:%H:%M}`):")
    print_streams(streams_answer(lake, session, level_kind, clock))


def full_answer(lake, session: dt.date, clock: dt.time, level_kind: str, neighbours: int, as_of=None) -> dict:
    """Retrieval (as of the session) plus the session's own model (as of the session), if it was built.
    Neither when price is not near the level (`near_level` false: the answer says how far it is).
    `as_of`: the session's warm `AsOf` (the query service keeps one), else loaded here."""
    from .gold.as_of import query_answer
    from .ml.serving import model_answer

    answer = query_answer(lake, session, clock, level_kind, neighbours, as_of=as_of)
    if not answer["near_level"]:
        return answer
    try:
        answer["model"] = model_answer(lake, session, clock, level_kind)
    except ValueError as exc:  # e.g. a T0 session asked of a T3 model
        answer["model"] = {"error": str(exc)}
    return answer


def print_answer(answer: dict) -> None:
    """A query answer the way a trader reads it."""
    click.echo(f"\n{answer['session']} {answer['time_et']} ET: {answer['level_kind']} {answer['level_price']:.2f}, "
               f"spot {answer['spot']:.2f}, approach {answer['direction']} ({answer['time_bucket']}, tier {answer['tier']})")
    for name, item in answer["state"].items():
        click.echo(f"  {name:<20} {_fixed(item['value'], 3):>12}  {item['meaning']}")
    r = answer.get("retrieval")
    if r is None:
        click.echo(f"  {answer.get('note')}")
        return
    p, base, (low, high) = r["probabilities"], r["base_rates"], r["p_break_interval"]
    click.echo(f"  outcome: BREAK {p['BREAK']:.0%}  REJECT {p['REJECT']:.0%}  CHOP {p['CHOP']:.0%}  "
               f"({r['credible_level']:.0%} interval for BREAK {low:.0%}–{high:.0%}, effective N {r['effective_n']:.1f}, "
               f"{r['n_neighbours']} neighbours)")
    click.echo(f"  base rate ({r['partition']['granularity'].replace('_', ' × ')}, {r['base_history']} earlier episodes): "
               f"BREAK {base['BREAK']:.0%}  REJECT {base['REJECT']:.0%}  CHOP {base['CHOP']:.0%}"
               + ("   [insufficient history]" if r["insufficient_history"] else ""))
    click.echo("  nearest past setups:")
    for n in r["neighbours"]:
        click.echo(f"    {n['session']} {n['level_kind']:<8} {n['direction']:<4} sim {n['similarity']:.2f}  "
                   f"w {n['weight']:.2f}  → {n['label']:<6} (MFE {_fixed(n['mfe_atr'])} / MAE {_fixed(n['mae_atr'])} ATR)")
    _print_model(answer.get("model"))


def _fixed(value: float | None, digits: int = 2) -> str:
    """A number for a table cell; "—" for a missing one (NaN arrives from a server as null)."""
    return "—" if value is None else f"{value:.{digits}f}"


def _print_model(model: dict | None) -> None:
    if model is None:
        click.echo("  model: no ml/break_model partition for this session (materialize it for this date)")
        return
    if "error" in model:
        click.echo(f"  model: {model['error']}")
        return
    if "not_enough_history" in model:
        click.echo(f"  model: none as of {model['model_as_of']} ({model['not_enough_history']})")
        return
    p = model["prediction"]
    click.echo(f"  model as of {model['model_as_of']} (trained on {model['trained_on_first']}..{model['trained_on_last']}): "
               f"p(BREAK | decisive) {p['p_break']:.0%} vs base rate {p['base_rate']:.0%} "
               f"(edge {p['edge']:+.0%}; p(CHOP) {p['p_chop']:.0%}; {p['calibration']} calibration)")
    for side in ("break", "reject"):
        for d in model["drivers"][side]:
            pct = "" if d["percentile"] is None else f", percentile {d['percentile']:.0f}"
            click.echo(f"    {'↑' if side == 'break' else '↓'} {d['name']:<42} {d['edge']:+.1%}{pct}")


@main.command()
@click.option("--date", "session", type=click.DateTime(["%Y-%m-%d"]), required=True, help="session date")
@click.option("--time", "clock", type=click.DateTime(["%H:%M"]), required=True, help="ET clock time, 09:30–12:30")
@click.option("--level", "level_kind", type=LEVEL_CHOICE, required=True)
@click.option("--neighbours", type=int, default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the answer as JSON")
@click.option("--server", envvar="SPYMASTER_SERVER", default=None, metavar="URL",
              help="ask a running `spymaster serve` (e.g. http://127.0.0.1:3071) instead of loading in this "
                   "process [env: SPYMASTER_SERVER]")
def query(session: dt.datetime, clock: dt.datetime, level_kind: str, neighbours: int, as_json: bool,
          server: str | None) -> None:
    """What happened next in the most similar past setups at this level (as of this session)."""
    import json

    answer = None
    if server:
        answer = answer_from_server(server, session.date(), clock.time(), level_kind, neighbours)
    if answer is None:
        from .lake import Lake

        lake = Lake(spymaster_home() / "lake")
        try:
            answer = full_answer(lake, session.date(), clock.time(), level_kind, neighbours)
        except (FileNotFoundError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(answer, indent=2, default=str))
    else:
        print_answer(answer)


def answer_from_server(server: str, session: dt.date, clock: dt.time, level_kind: str, neighbours: int) -> dict | None:
    """The answer from a `spymaster serve` process (stdlib HTTP: the client path imports nothing heavy).
    None when the server cannot be reached (the caller answers in-process); its 4xx errors are the user's."""
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    params = urllib.parse.urlencode({"date": session.isoformat(), "time": clock.strftime("%H:%M"),
                                     "level": level_kind, "neighbours": neighbours})
    url = f"{server.rstrip('/')}/api/query?{params}"
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            message = json.load(exc).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        raise click.ClickException(f"{server}: {message}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        click.echo(f"warning: query server {server} unreachable ({reason}); answering in this process", err=True)
        return None


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=QUERY_PORT, show_default=True)
def serve(host: str, port: int) -> None:
    """Serve `GET /api/query?date=&time=&level=&neighbours=` from a warm process (each session's
    as-of index stays loaded), for `spymaster query --server http://HOST:PORT`."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from .lake import Lake
    from .live.query_api import query_routes

    lake = Lake(spymaster_home() / "lake")

    def health(_request) -> JSONResponse:
        return JSONResponse({"status": "ok", "lake": str(lake.root)})

    app = Starlette(routes=[*query_routes(lake), Route("/api/health", health)])
    click.echo(f"Answering queries on http://{host}:{port}/api/query over {lake.root} "
               f"(use: spymaster query --server http://{host}:{port} ...)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


# --- live replay: engine + WebSocket server + dashboard -------------------------------------

@main.command()
@click.option("--replay", "session", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="start replaying this session at once (otherwise pick one on the page)")
@click.option("--speed", type=float, default=0.0, show_default=True, help="0 = as fast as possible, 1 = real time")
@click.option("--start", type=click.DateTime(["%H:%M"]), default="09:22", show_default=True, help="ET clock time")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=4070, show_default=True)
@click.option("--record", type=click.Path(dir_okay=False), default=None, help="append every frame sent to this JSON-lines log")
@click.option("--schema", "print_schema", is_flag=True, help="print the WebSocket messages' JSON schema and exit")
def live(session: dt.datetime | None, speed: float, start: dt.datetime, host: str, port: int, record: str | None,
         print_schema: bool) -> None:
    """Replay a session through the incremental engine and serve the trader's dashboard (and /api/query)."""
    import json

    if print_schema:
        from .live.messages import message_json_schema

        click.echo(json.dumps(message_json_schema(), indent=2))
        return
    from .lake import Lake
    from .live.engine import EngineReplaySource
    from .live.query_api import query_routes
    from .live.server import run_server

    lake = Lake(spymaster_home() / "lake")
    source = EngineReplaySource(lake)
    if not source.sessions():
        raise click.ClickException(f"no session in {lake.root} has bronze data and its as-of artifacts: run `spymaster demo` "
                                   "or backfill sessions first")
    if session is not None and session.date() not in source.sessions():
        raise click.ClickException(f"{session.date()} cannot be replayed from {lake.root} (replayable: "
                                   f"{', '.join(map(str, source.sessions()))})")
    run_server(source, host, port, record=record, replay=None if session is None else session.date(), speed=speed,
               start=start.time(), extra_routes=query_routes(lake))


# --- Pentaview streams (gold/streams, gold/alerts) --------------------------------------------

@main.command()
@click.option("--date", "session", type=click.DateTime(["%Y-%m-%d"]), required=True, help="session date")
@click.option("--level", "level_kind", type=LEVEL_CHOICE, required=True)
@click.option("--at", "clock", type=click.DateTime(["%H:%M"]), default=None, help="ET clock time (default: session end)")
@click.option("--rows", type=int, default=6, show_default=True, help="stream bars to show, up to --at")
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
def streams(session: dt.datetime, level_kind: str, clock: dt.datetime | None, rows: int, as_json: bool) -> None:
    """Pentaview stream bars of a level up to a time, its active alerts, the exit score for LONG and SHORT,
    and the projection of the streams' next 10 bars with its q10–q90 band."""
    import json

    from .gold.streams import streams_answer
    from .lake import Lake

    lake = Lake(spymaster_home() / "lake")
    try:
        answer = streams_answer(lake, session.date(), level_kind, clock.time() if clock else None, rows)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(answer, indent=2, default=str))
    else:
        print_streams(answer)


def print_streams(answer: dict) -> None:
    """Stream bars, alerts, exit scores and the projection of one level, the way a trader reads them."""
    from .gold.streams import STREAM_VIEW_COLUMNS

    click.echo(f"{answer['session']} {answer['time_et']} ET: {answer['level_kind']} {answer['level_price']:.2f}, spot {answer['spot']:.2f} "
               f"(d {answer['d_atr']:+.2f} ATR, {answer['direction']}, tier {answer['tier']})")
    click.echo("  time      " + " ".join(f"{c.removeprefix('sigma_'):>9}" for c in STREAM_VIEW_COLUMNS))
    for bar in answer["bars"]:
        cells = " ".join("        —" if bar[c] is None else f"{bar[c]:>+9.3f}" for c in STREAM_VIEW_COLUMNS)
        click.echo(f"  {bar['time_et']} {cells}")
    alerts = answer["alerts"]
    click.echo("  alerts: " + ("(gold/alerts not built)" if alerts is None else ", ".join(
        f"{a['alert']} {a['confidence']:.2f}{' (new)' if a['onset'] else ''}" for a in alerts) or "none"))
    for side, score in answer["exit"].items():
        value = "—" if score["score"] is None else f"{score['score']:+.3f}"
        click.echo(f"  exit {side:<5}: {score['action'] or 'no advice (no streams)'}  score {value}")
    projection = answer.get("projection")
    if projection is None:
        click.echo("  projection: (ml/projections not built for this session)")
    elif "streams" not in projection:
        click.echo(f"  projection: none ({projection['note']})")
    else:
        click.echo(f"  projection (models as of {projection['model_as_of']}, trained to {projection['trained_on_last']}), "
                   "q50 [q10, q90] after 1 / 5 / 10 bars of 30 s:")
        for stream, band in projection["streams"].items():
            cells = "  ".join(f"{band['q50'][h - 1]:+.2f} [{band['q10'][h - 1]:+.2f}, {band['q90'][h - 1]:+.2f}]"
                              for h in (1, 5, 10))
            click.echo(f"    {stream:<8} now {band['now']:+.2f}  →  {cells}")


@main.command()
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), required=True)
def summary(start: dt.datetime, end: dt.datetime) -> None:
    """Print what the lake holds for sessions in [start, end]."""
    from .lib.calendar import trading_sessions

    _print_summary(spymaster_home(), trading_sessions(start.date(), end.date()))


if __name__ == "__main__":
    sys.exit(main())
