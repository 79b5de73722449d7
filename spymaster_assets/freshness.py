"""Freshness: each session's partitions are due by 18:00 ET on the session's own day.

Dagster 1.13's `FreshnessPolicy` is per asset: it passes when *any* partition was materialized in
its window, so a backfill of an old date makes an asset look fresh while the latest session is
missing. Its per-partition predecessor (`build_time_partition_freshness_checks` + its sensor) is
superseded and launches a run per evaluation, which would wait behind a long backfill in the
one-run queue. So session assets get an asset check, SESSION_PARTITION_PRESENT, that asks the one
question that matters ("is the latest session whose deadline has passed materialized?"), and a
sensor that reports its result directly (no run) whenever the answer changes. Unpartitioned assets
that the daily job rebuilds keep a cron `FreshnessPolicy`, which is exact for them.
"""

import datetime as dt
import json
from collections.abc import Sequence

import dagster as dg
from dagster_shared.record import record

from .lib.calendar import ET, sessions_before

# The 16:30 ET schedule plus one retry fit before 18:00 (SPEC: partitions expected by 18:00 ET).
DEADLINE = dt.time(18, 0)
DEADLINE_CRON = "0 18 * * 1-5"
SESSION_PARTITION_PRESENT = "SESSION_PARTITION_PRESENT"
# A missing session is reported within five minutes of its deadline; each tick is one query per asset.
SENSOR_INTERVAL_SECONDS = 300

# For assets rebuilt whole by the daily job (the break model): materialized in the
# two hours before the deadline.
DAILY_REBUILD_FRESHNESS = dg.FreshnessPolicy.cron(
    deadline_cron=DEADLINE_CRON, lower_bound_delta=dt.timedelta(hours=2), timezone="America/New_York"
)


def with_daily_rebuild_freshness(assets: Sequence[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """The cron policy on the unpartitioned assets; partitioned ones are judged per session."""
    def due_by_deadline(spec: dg.AssetSpec) -> dg.AssetSpec:
        return dg.apply_freshness_policy(spec, DAILY_REBUILD_FRESHNESS)

    return [asset if asset.partitions_def else dg.map_asset_specs(due_by_deadline, [asset])[0] for asset in assets]


@record
class ChecksNamed(dg.AssetSelection):
    """Every asset check called `check_name`, whichever asset it targets (and no asset)."""

    check_name: str

    def resolve_inner(self, asset_graph, allow_missing):
        return set()

    def resolve_checks_inner(self, asset_graph, allow_missing):
        return {key for key in asset_graph.asset_check_keys if key.name == self.check_name}

    def to_serializable_asset_selection(self, asset_graph):
        return dg.AssetSelection.checks(*self.resolve_checks(asset_graph))


# Session jobs leave the freshness checks out: inside a run they would judge the wall-clock's
# session, not the run's (a backfill of 2013 would report today's session missing, once per run).
SESSION_FRESHNESS_CHECKS = ChecksNamed(check_name=SESSION_PARTITION_PRESENT)


def now_et() -> dt.datetime:
    return dt.datetime.now(tz=ET)


def expected_session(now: dt.datetime) -> dt.date:
    """The latest trading session whose 18:00 ET deadline is at or before `now`."""
    local = now.astimezone(ET)
    last_deadline_day = local.date() if local.time() >= DEADLINE else local.date() - dt.timedelta(days=1)
    return sessions_before(last_deadline_day + dt.timedelta(days=1), 1)[-1]


def session_freshness(instance: dg.DagsterInstance, asset_key: dg.AssetKey, now: dt.datetime) -> dg.AssetCheckEvaluation:
    """Passed iff the partition of the latest due session has been materialized."""
    session = expected_session(now).isoformat()
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[session]), limit=1
    ).records
    metadata: dict[str, dg.RawMetadataValue] = {
        "expected_session": session,
        "evaluated_at": dg.MetadataValue.timestamp(now),
    }
    if records:
        metadata["materialized_at"] = dg.MetadataValue.timestamp(records[0].timestamp)
        description = f"session {session} is materialized"
    else:
        description = f"session {session} is missing (due {session} {DEADLINE:%H:%M} ET)"
    return dg.AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=SESSION_PARTITION_PRESENT,
        passed=bool(records),
        metadata=metadata,
        description=description,
    )


def build_session_freshness(
    asset_keys: Sequence[dg.AssetKey],
) -> tuple[dg.AssetChecksDefinition, dg.SensorDefinition]:
    """The SESSION_PARTITION_PRESENT check on each session asset, and the sensor that reports it."""

    @dg.multi_asset_check(
        specs=[
            dg.AssetCheckSpec(
                SESSION_PARTITION_PRESENT,
                asset=key,
                description=f"The latest session whose {DEADLINE:%H:%M} ET deadline has passed is materialized",
            )
            for key in asset_keys
        ],
        can_subset=True,
        name="session_freshness_checks",
    )
    def session_freshness_checks(context: dg.AssetCheckExecutionContext):
        """Evaluate on demand (the UI's "Execute"); the sensor evaluates the same without a run."""
        now = now_et()
        for check_key in context.selected_asset_check_keys:
            evaluation = session_freshness(context.instance, check_key.asset_key, now)
            yield dg.AssetCheckResult(
                asset_key=evaluation.asset_key,
                check_name=evaluation.check_name,
                passed=evaluation.passed,
                metadata=evaluation.metadata,
                description=evaluation.description,
            )

    @dg.sensor(minimum_interval_seconds=SENSOR_INTERVAL_SECONDS, default_status=dg.DefaultSensorStatus.RUNNING)
    def session_freshness_sensor(context: dg.SensorEvaluationContext):
        """Report SESSION_PARTITION_PRESENT for every session asset when its answer changes: at each
        18:00 ET deadline (a new session is due) and when a missing session arrives."""
        now = now_et()
        reported = json.loads(context.cursor) if context.cursor else {}
        evaluations = [session_freshness(context.instance, key, now) for key in asset_keys]
        state = {e.asset_key.to_user_string(): [e.metadata["expected_session"].value, e.passed] for e in evaluations}
        changed = [e for e in evaluations if reported.get(e.asset_key.to_user_string()) != state[e.asset_key.to_user_string()]]
        return dg.SensorResult(
            asset_events=changed,
            cursor=json.dumps(state, sort_keys=True),
            skip_reason=None if changed else f"unchanged since the last report (session {expected_session(now)})",
        )

    return session_freshness_checks, session_freshness_sensor
