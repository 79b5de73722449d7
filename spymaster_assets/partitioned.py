"""What every session-partitioned asset shares: partitions, backfill policy, stamps, run bookkeeping."""

from __future__ import annotations

import datetime as dt
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg

from .partitions import trading_sessions_partitions
from .resources import PipelineSettings

OWNERS = ["team:data-eng"]


def session_asset_defaults(group: str) -> dict:
    """Decorator arguments shared by every session-partitioned asset of a layer.

    No backfill policy: a backfill (UI, `spymaster demo`) launches one run per session, tagged
    `dagster/partition`, so a session that fails fails only its own partitions and their
    downstream, and asset checks and `dagster/row_count` are recorded per partition.
    (`BackfillPolicy.multi_run(1)` also makes one run per session, but tags it as a one-key
    range: the run then has no partition key and partitioned checks lose their partition.)
    Every session asset still loops over context.partition_keys, so a range run
    (`job.execute_in_process` with range tags) stays correct.
    """
    return dict(
        partitions_def=trading_sessions_partitions,
        group_name=group,
        owners=OWNERS,
    )


def session_check(name: str, asset: dg.CoercibleToAssetKey, description: str = "", blocking: bool = False) -> dg.AssetCheckSpec:
    """An asset check evaluated per session partition: the UI lists its result under the partition
    the run built (a check result of a range run has no partition and is recorded unpartitioned).
    Partitioned asset checks are a preview feature in Dagster 1.13."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=asset, description=description, blocking=blocking,
                                 partitions_def=trading_sessions_partitions)


RAW_DBN_FILES = dg.AssetKey(["raw", "dbn_files"])
EPISODES = dg.AssetKey(["gold", "episodes"])

# "As of D" assets (normalization stats, metric, index, model) read a bounded trailing window
# of sessions strictly before D. Their declared partition lineage is deliberately narrower:
# - the newest session the window adds (D-1). A lookback mapping over the whole window would
#   make a UI backfill of one day (the dialog sends partition names, and Dagster derives each
#   downstream asset's partitions through the mappings) target every later as-of partition
#   whose window contains it: measured 60 stats + 486 index partitions for one session;
# - the session's own raw manifest (D): D's as-of artifacts exist for sessions that exist,
#   and a backfill of D reaches them through this identity edge, so it builds D itself.
NEWEST_EARLIER_SESSION = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1,
                                                       allow_nonexistent_upstream_partitions=True)


def as_of_deps(*earlier: dg.AssetKey) -> list[dg.AssetDep]:
    """Dependencies of an as-of-D asset: `earlier` assets through D-1, the raw manifest at D."""
    return [*(dg.AssetDep(key, partition_mapping=NEWEST_EARLIER_SESSION) for key in earlier or (EPISODES,)),
            dg.AssetDep(RAW_DBN_FILES)]


def stamp(settings: PipelineSettings, schema_version: str) -> dict[str, str]:
    """Parquet key-value metadata carried by every artifact."""
    return {"schema_version": schema_version, "config_hash": settings.config_hash()}


def sessions(context: dg.AssetExecutionContext) -> list[dt.date]:
    return [dt.date.fromisoformat(key) for key in context.partition_keys]


# Key of the raw manifest's Parquet metadata that marks a trading date without usable data.
EMPTY_SESSION = "empty_session"


def empty_session_reason(lake, session: dt.date | str) -> str | None:
    """Why raw/dbn_files flagged `session` as a trading date without data (None: it has data,
    or no manifest exists yet)."""
    if not lake.has_partition("raw", "dbn_files", session):
        return None
    return lake.file_metadata("raw", "dbn_files", session).get(EMPTY_SESSION) or None


@dataclass
class RangeRun:
    """Runs one function per session of a (possibly multi-partition) run.

    A failing session does not stop the others: every partition that can be built is
    written (atomically), and the run fails at the end naming each bad session and why.

    A session that raw/dbn_files flagged as empty (a trading date without data) is not built
    and does not fail the run: `empty(session, reason)` writes the asset's typed empty
    partitions if given, and the session is listed in `self.empty` (not in `per_session`),
    so every session asset treats it as a session with no episodes.
    """

    context: dg.AssetExecutionContext
    per_session: dict[str, dict] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    empty: dict[str, str] = field(default_factory=dict)
    follows_manifest: bool = True  # False only for raw/dbn_files, which writes the flag

    def run(self, build: Callable[[dt.date], dict], expected: tuple[type[BaseException], ...],
            empty: Callable[[dt.date, str], object] | None = None) -> None:
        lake = self._lake()
        for session in sessions(self.context):
            reason = empty_session_reason(lake, session) if lake is not None else None
            if reason is not None:
                if empty is not None:
                    empty(session, reason)
                self.empty[session.isoformat()] = reason
                written = "written as an empty partition" if empty is not None else "nothing to build"
                self.context.log.warning(f"{session}: flagged empty session ({reason}); {written}")
                continue
            try:
                self.per_session[session.isoformat()] = build(session)
            except expected as exc:
                self.errors[session.isoformat()] = f"{type(exc).__name__}: {exc}"
                self.context.log.error(f"{session}: {exc}")
        if self.errors:
            listing = "; ".join(f"{day} → {why}" for day, why in sorted(self.errors.items()))
            raise dg.Failure(
                description=f"{len(self.errors)} of {len(self.context.partition_keys)} sessions failed: {listing}",
                metadata={"failed_sessions": dg.MetadataValue.json(self.errors)},
            )

    def _lake(self):
        if not self.follows_manifest:
            return None
        resource = getattr(self.context.resources, "lake", None)
        return resource.lake() if resource is not None else None

    def total(self, key: str) -> int:
        return int(sum(summary.get(key, 0) for summary in self.per_session.values()))

    def metadata(self, **extra) -> dict:
        meta = {
            "sessions": len(self.per_session),
            "per_session": dg.MetadataValue.json(self.per_session),
        }
        if self.empty:
            meta["empty_sessions"] = dg.MetadataValue.json(self.empty)
        if len(self.per_session) == 1:
            (only,) = self.per_session.values()
            meta |= {k: v for k, v in only.items() if isinstance(v, (int, float, str, bool))}
        return meta | extra


def blocking_check(
    lake,
    check_name: str,
    problems: dict[str, object],
    tables: list[tuple[str, str]],
    *,
    asset_key: dg.AssetKey | None = None,
    **metadata,
) -> dg.AssetCheckResult:
    """The result of a blocking check over a run's sessions (`problems`: session → what is wrong).

    Dagster's blocking only stops *this* run's downstream steps; the partitions stay in the
    lake. So each failing session's partitions of `tables` are quarantined, naming the check
    and the problem: no later run can read them until they are rebuilt (a re-publish clears it).
    """
    for day, detail in sorted(problems.items()):
        reason = f"{check_name}: {json.dumps(detail, default=str, sort_keys=True)}"
        for layer, table in tables:
            lake.quarantine(layer, table, day, reason)
    quarantined = [f"{layer}/{table}/{day}" for day in sorted(problems) for layer, table in tables]
    extra = {"asset_key": asset_key} if asset_key is not None else {}
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=not problems,
        metadata={"problems": dg.MetadataValue.json(problems),
                  "quarantined": dg.MetadataValue.json(quarantined), **metadata},
        **extra,
    )
