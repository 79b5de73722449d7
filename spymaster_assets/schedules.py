"""Jobs, schedules, sensors and freshness: what the Dagster daemon runs on its own."""


import datetime as dt
import hashlib
import json

import dagster as dg
from dagster._core.definitions.data_version import CODE_VERSION_TAG

from .freshness import SESSION_FRESHNESS_CHECKS
from .lib.calendar import ET, is_trading_session
from .partitions import trading_sessions_partitions
from .lake import Lake
from .resources import LakeResource, MarketDataResource

# The warehouse: DuckDB views over the lake (group "warehouse") and the dbt marts (group "marts"),
# which are views too. Both read the lake's partitions in place, so session D's rows are in them
# as soon as D's partitions are written: a session adds nothing to rebuild. They are rebuilt when
# the lake's set of tables or the dbt code changes (warehouse_layout_sensor), and weekly with the
# dbt tests (weekly_reports_job).
WAREHOUSE_SELECTION = dg.AssetSelection.groups("warehouse", "marts")

DAILY_SELECTION = (dg.AssetSelection.all() - dg.AssetSelection.groups("reports") - WAREHOUSE_SELECTION
                   - SESSION_FRESHNESS_CHECKS)

daily_market_job = dg.define_asset_job(
    "daily_market_job",
    selection=DAILY_SELECTION,
    description="Every asset but the reports and the warehouse, for one session: the session's partitions "
                "and the model. The warehouse views and dbt marts read them in place (no rebuild).",
)

warehouse_job = dg.define_asset_job(
    "warehouse_job",
    selection=WAREHOUSE_SELECTION,
    description="Re-create the DuckDB lake views and the dbt marts (views), with the dbt tests: when a lake "
                "table appears or the dbt code changes (warehouse_layout_sensor), or by hand.",
)

# Reports (walk-forward evaluations, analyses) read every session and take minutes; a session adds
# little to them, so they run once a week, after Friday's session, instead of in every daily run.
# The warehouse follows them: the reports write lake tables the marts read, and its dbt tests
# (66 data tests, ~15 CPU-s) check the week's sessions here rather than in every daily run.
weekly_reports_job = dg.define_asset_job(
    "weekly_reports_job",
    selection=dg.AssetSelection.groups("reports") | WAREHOUSE_SELECTION,
    description="The reports (group \"reports\") over every session present: evaluations and analyses; then "
                "the warehouse views and the dbt marts with their tests.",
)
WEEKLY_REPORTS_CRON = "0 6 * * 6"  # Saturday 06:00 ET: after Friday's daily run and its retry window

weekly_reports_schedule = dg.ScheduleDefinition(
    name="weekly_reports_schedule",
    job=weekly_reports_job,
    cron_schedule=WEEKLY_REPORTS_CRON,
    execution_timezone="America/New_York",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Rebuild the reports and test the marts once a week (neither is part of the daily run).",
)


def warehouse_staleness(instance: dg.DagsterInstance, asset_graph, lake: Lake) -> list[str]:
    """Why the warehouse must be re-created, or [] when it is current: the lake's tables differ from
    those the views were made for (a first partition of a table; the staging models read a missing
    table as an empty relation, so they too must be re-made), or a dbt model's code version differs
    from the one it was last built with (or it was never built)."""
    from .warehouse import LAKE_VIEWS_KEY, LAYOUT_METADATA, lake_layout

    layout = lake_layout(lake)
    if not layout:
        return []  # nothing to view yet
    keys = [key for key in asset_graph.get_all_asset_keys()
            if asset_graph.get(key).group_name in ("warehouse", "marts")]
    built = {record.asset_entry.asset_key: record.asset_entry.last_materialization
             for record in instance.get_asset_records(keys)}
    reasons = []
    views = built.get(LAKE_VIEWS_KEY)
    built_layout = views.asset_materialization.metadata.get(LAYOUT_METADATA) if views else None
    if built_layout is None or built_layout.value != layout:
        reasons.append(f"lake tables {layout} (views made for {built_layout.value if built_layout else 'none'})")
    for key in keys:
        code_version = asset_graph.get(key).code_version
        event = built.get(key)
        if event is None or (code_version and event.asset_materialization.tags.get(CODE_VERSION_TAG) != code_version):
            reasons.append(f"{key.to_user_string()} {'never built' if event is None else 'code changed'}")
    return reasons


@dg.sensor(job=warehouse_job, minimum_interval_seconds=120, default_status=dg.DefaultSensorStatus.RUNNING)
def warehouse_layout_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    """Re-create the warehouse views and marts when the lake gains a table or the dbt code changes.
    New sessions of existing tables need nothing: every view reads its table's partitions in place.
    One run per distinct state (run key), so a failed rebuild is not retried until something changes."""
    reasons = warehouse_staleness(context.instance, context.repository_def.asset_graph, lake.lake())
    if not reasons:
        return dg.SkipReason("the warehouse views and marts match the lake's tables and the dbt code")
    run_key = hashlib.sha256("|".join(reasons).encode()).hexdigest()[:16]
    return dg.RunRequest(run_key=run_key, tags={"spymaster/trigger": "warehouse_layout"})

# The session closes at 16:00 ET (Globex at 17:00) and is a partition from then on (partitions.py);
# by 16:30 the vendor's files for the day are complete enough for bronze, and the 18:00
# freshness deadline leaves room for a retry.
DAILY_CRON = "30 16 * * 1-5"


def session_for_tick(tick: dt.datetime) -> str | None:
    """The session partition a schedule tick should materialize, or None on a non-trading day."""
    session = tick.astimezone(ET).date()
    return session.isoformat() if is_trading_session(session) else None


@dg.schedule(
    job=daily_market_job,
    cron_schedule=DAILY_CRON,
    execution_timezone="America/New_York",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def daily_market_schedule(context: dg.ScheduleEvaluationContext):
    """Materialize the session that just closed (skip weekends' and holidays' ticks)."""
    session = session_for_tick(context.scheduled_execution_time)
    if session is None:
        return dg.SkipReason(f"{context.scheduled_execution_time.date()} is not a CME ES trading session")
    return dg.RunRequest(run_key=session, partition_key=session)


def sessions_touched(files, first: dt.date | None = None) -> dict[str, list[str]]:
    """Session partition → the DBN files whose time range overlaps its window (new or changed files only)."""
    from .lib.calendar import session_window, trading_sessions

    touched: dict[str, list[str]] = {}
    for indexed in files:
        start = dt.datetime.fromtimestamp(indexed.header.start_ns / 1e9, tz=ET).date() - dt.timedelta(days=1)
        end_ns = indexed.header.end_ns or indexed.header.start_ns
        end = dt.datetime.fromtimestamp(end_ns / 1e9, tz=ET).date() + dt.timedelta(days=1)
        for session in trading_sessions(max(start, first) if first else start, end):
            window = session_window(session)
            if indexed.overlaps(window.globex_open_ns, window.close_ns):
                touched.setdefault(session.isoformat(), []).append(str(indexed.path))
    return touched


def file_fingerprint(indexed) -> str:
    stat = indexed.path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


@dg.sensor(job=daily_market_job, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.STOPPED)
def new_dbn_files_sensor(context: dg.SensorEvaluationContext, market_data: MarketDataResource):
    """Launch the partitions of sessions whose DBN files appeared (or changed) in the local raw
    directory (source `local`). The cursor remembers each file's size and mtime; a run key per
    session and file set makes a re-evaluation idempotent. Stopped by default: turn it on when
    files are dropped by hand or by a downloader outside Dagster."""
    if market_data.source != "local" or not market_data.local_dir:
        return dg.SkipReason("the market-data source is not a local DBN directory")
    source = market_data.build()
    seen = json.loads(context.cursor) if context.cursor else {}
    indexed = source.index()
    current = {str(f.path): file_fingerprint(f) for f in indexed}
    changed = [f for f in indexed if seen.get(str(f.path)) != current[str(f.path)]]
    context.update_cursor(json.dumps(current, sort_keys=True))
    if not changed:
        return dg.SkipReason(f"no new DBN files under {market_data.local_dir}")
    keys = set(trading_sessions_partitions.get_partition_keys())
    requests = []
    for session, paths in sorted(sessions_touched(changed).items()):
        if session not in keys:
            continue
        digest = hashlib.sha256("|".join(f"{p}:{current[p]}" for p in sorted(paths)).encode()).hexdigest()[:12]
        requests.append(dg.RunRequest(run_key=f"{session}:{digest}", partition_key=session,
                                      tags={"spymaster/trigger": "new_dbn_files"}))
    return requests or dg.SkipReason("new files cover no trading session partition")
