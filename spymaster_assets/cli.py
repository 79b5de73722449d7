"""`spymaster`: the demo, summaries and benchmarks from the command line."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

from .resources import REPO_ROOT, spymaster_home

DEMO_START = dt.date(2024, 12, 5)  # ten sessions spanning the ESZ4 → ESH5 roll (2024-12-12)
DEMO_SESSIONS = 10
DAGSTER_PORT = 3070


def prepare_dagster_home(home: Path) -> Path:
    """A persistent DAGSTER_HOME under the project home, so the UI sees the demo's runs."""
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
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
    partition_range = f"{sessions[0]}...{sessions[-1]}"
    command = ["dg", "launch", "--assets", "*", "--partition-range", partition_range]
    click.echo(f"Backfilling {len(sessions)} sessions {partition_range} (synthetic, scale={scale}, seed={seed})")
    click.echo(f"  $ {' '.join(command[:3])} '*' {' '.join(command[4:])}")
    began = time.perf_counter()
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        click.echo(result.stdout[-4000:] + result.stderr[-8000:], err=True)
        raise SystemExit(f"backfill failed (exit {result.returncode})")
    click.echo(f"  done in {time.perf_counter() - began:.1f} s")
    _print_summary(home, sessions)
    _print_demo_query(home, sessions[-1])
    click.echo(
        "\nOpen the Dagster UI on the same data:\n"
        f"  SPYMASTER_HOME={home} DAGSTER_HOME={home / 'dagster'} "
        f"uv run dagster dev -h 127.0.0.1 -p {DAGSTER_PORT}\n"
        f"  (or `make dev`) then browse http://127.0.0.1:{DAGSTER_PORT}"
    )


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


def full_answer(lake, session: dt.date, clock: dt.time, level_kind: str, neighbours: int) -> dict:
    """Retrieval (as of the session) plus the serving model's probability and drivers, if one is serving."""
    from .gold.as_of import query_answer
    from .ml.serving import model_answer

    answer = query_answer(lake, session, clock, level_kind, neighbours)
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
        click.echo(f"  {name:<20} {item['value']:>12.3f}  {item['meaning']}")
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
                   f"w {n['weight']:.2f}  → {n['label']:<6} (MFE {n['mfe_atr']:.2f} / MAE {n['mae_atr']:.2f} ATR)")
    _print_model(answer.get("model"))


def _print_model(model: dict | None) -> None:
    if model is None:
        click.echo("  model: none serving yet (train it: materialize ml/break_model)")
        return
    if "error" in model:
        click.echo(f"  model: {model['error']}")
        return
    p = model["prediction"]
    click.echo(f"  model: p(BREAK | decisive) {p['p_break']:.0%} vs base rate {p['base_rate']:.0%} "
               f"(edge {p['edge']:+.0%}; p(CHOP) {p['p_chop']:.0%}; {p['calibration']} calibration; run {model['model_run_id'][:8]})")
    if model["in_sample"]:
        click.echo(f"    (in-sample: the serving model was trained on sessions through {model['trained_through']}, "
                   "this one included — retrieval above is the out-of-sample answer)")
    for side in ("break", "reject"):
        for d in model["drivers"][side]:
            pct = "" if d["percentile"] is None else f", percentile {d['percentile']:.0f}"
            click.echo(f"    {'↑' if side == 'break' else '↓'} {d['name']:<42} {d['edge']:+.1%}{pct}")


@main.command()
@click.option("--date", "session", type=click.DateTime(["%Y-%m-%d"]), required=True, help="session date")
@click.option("--time", "clock", type=click.DateTime(["%H:%M"]), required=True, help="ET clock time, 09:30–12:30")
@click.option("--level", "level_kind", type=click.Choice(["PM_HIGH", "PM_LOW", "OR_HIGH", "OR_LOW", "SMA_90", "EMA_20"]),
              required=True)
@click.option("--neighbours", type=int, default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the answer as JSON")
def query(session: dt.datetime, clock: dt.datetime, level_kind: str, neighbours: int, as_json: bool) -> None:
    """What happened next in the most similar past setups at this level (as of this session)."""
    import json

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


# --- Pentaview streams (gold/streams, gold/alerts) --------------------------------------------

@main.command()
@click.option("--date", "session", type=click.DateTime(["%Y-%m-%d"]), required=True, help="session date")
@click.option("--level", "level_kind", type=click.Choice(["PM_HIGH", "PM_LOW", "OR_HIGH", "OR_LOW", "SMA_90", "EMA_20"]),
              required=True)
@click.option("--at", "clock", type=click.DateTime(["%H:%M"]), default=None, help="ET clock time (default: session end)")
@click.option("--rows", type=int, default=6, show_default=True, help="stream bars to show, up to --at")
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
def streams(session: dt.datetime, level_kind: str, clock: dt.datetime | None, rows: int, as_json: bool) -> None:
    """Pentaview stream bars of a level up to a time, its active alerts, and the exit score for LONG and SHORT."""
    import json

    from .gold.streams import STREAM_VIEW_COLUMNS, streams_answer
    from .lake import Lake

    lake = Lake(spymaster_home() / "lake")
    try:
        answer = streams_answer(lake, session.date(), level_kind, clock.time() if clock else None, rows)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(answer, indent=2, default=str))
        return
    click.echo(f"{answer['session']} {answer['time_et']} ET: {level_kind} {answer['level_price']:.2f}, spot {answer['spot']:.2f} "
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


@main.command()
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), required=True)
def summary(start: dt.datetime, end: dt.datetime) -> None:
    """Print what the lake holds for sessions in [start, end]."""
    from .lib.calendar import trading_sessions

    _print_summary(spymaster_home(), trading_sessions(start.date(), end.date()))


if __name__ == "__main__":
    sys.exit(main())
