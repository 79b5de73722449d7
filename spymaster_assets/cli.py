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
    click.echo(
        "\nOpen the Dagster UI on the same data:\n"
        f"  SPYMASTER_HOME={home} DAGSTER_HOME={home / 'dagster'} "
        f"uv run dagster dev -h 127.0.0.1 -p {DAGSTER_PORT}\n"
        f"  (or `make dev`) then browse http://127.0.0.1:{DAGSTER_PORT}"
    )


def _print_summary(home: Path, sessions: list[dt.date]) -> None:
    import polars as pl

    from .lake import Lake
    from .summary import bronze_summary

    table = bronze_summary(Lake(home / "lake"), sessions)
    with pl.Config(tbl_rows=50, tbl_cols=20, tbl_width_chars=200, tbl_hide_dataframe_shape=True):
        click.echo("\nBronze, per session (rows per table):")
        click.echo(table)


@main.command()
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), required=True)
def summary(start: dt.datetime, end: dt.datetime) -> None:
    """Print what the lake holds for sessions in [start, end]."""
    from .lib.calendar import trading_sessions

    _print_summary(spymaster_home(), trading_sessions(start.date(), end.date()))


if __name__ == "__main__":
    sys.exit(main())
