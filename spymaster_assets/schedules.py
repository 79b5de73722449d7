"""Jobs, schedules, sensors and freshness: what the Dagster daemon runs on its own."""


import datetime as dt

import dagster as dg

from .lib.calendar import ET, is_trading_session

DAILY_SELECTION = dg.AssetSelection.all() - dg.AssetSelection.groups("reports")

daily_market_job = dg.define_asset_job(
    "daily_market_job",
    selection=DAILY_SELECTION,
    description="Every session-partitioned asset for one session (or a range, as one run).",
)

# The session closes at 16:00 ET (Globex at 17:00); by 16:30 the vendor's files for the day
# are complete enough for bronze, and the 18:00 freshness deadline leaves room for a retry.
DAILY_CRON = "30 16 * * 1-5"
FRESHNESS_DEADLINE_CRON = "0 18 * * 1-5"


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


# Each session's partitions must be in place by 18:00 ET on trading days: an asset whose
# last materialization is older than 2 h at the 18:00 deadline is stale. Freshness
# policies are evaluated by the daemon (Dagster 1.13 supersedes sensor-driven checks).
SESSION_FRESHNESS = dg.FreshnessPolicy.cron(
    deadline_cron=FRESHNESS_DEADLINE_CRON, lower_bound_delta=dt.timedelta(hours=2), timezone="America/New_York"
)
