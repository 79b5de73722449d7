"""raw/dbn_files: the session's DBN files, acquired from the configured source.

Two things are decided here, once, for every asset downstream:

- **The tier, never silently lower than the files meant.** A file that covers the session but
  cannot be used (truncated, random bytes, an MBO/TBBO file where the MBP-10 book should be,
  another dataset) fails the session, naming the file and why — unless
  `PipelineSettings.allow_tier_downgrade` is set: then the session runs at the tier its usable
  files reach, and the failed WARN check TIER_AS_EXPECTED records "tier T1 reached, T2
  expected: <file>: <reason>".
- **A trading date without data** (no futures files, or no futures trade/bar in RTH) is not a
  failure: its manifest is flagged (Parquet metadata `empty_session`), SESSION_HAS_DATA fails
  as a WARN naming the reason, and every downstream session asset writes a typed empty
  partition for it (partitioned.RangeRun), i.e. a session with no episodes.
"""

import datetime as dt
import json

import dagster as dg
import numpy as np

from ..lib.calendar import session_window
from ..lib.dbn_decode import DbnDecodeError, iter_record_chunks
from ..lib.tiers import NO_TIER, costs_data, stand_in_role, tier_shortfall
from ..partitioned import EMPTY_SESSION, RangeRun, session_asset_defaults, session_check, stamp
from ..resources import LakeResource, MarketDataResource, PipelineSettings
from ..sources.base import FUTURES, SessionFiles, SourceError
from . import BRONZE_SCHEMA_VERSION
from .manifest import manifest_frame

SESSION_HAS_DATA = "SESSION_HAS_DATA"
TIER_AS_EXPECTED = "TIER_AS_EXPECTED"
RAW_KEY = dg.AssetKey(["raw", "dbn_files"])


class TierDowngradeError(SourceError):
    """Files meant for a session cannot be used, and the session would silently run a tier lower."""


def has_rth_records(paths, schema: str, session: dt.date, chunk_records: int) -> bool:
    """Whether any futures record of `schema` falls in the session's RTH; stops at the first one."""
    window = session_window(session)
    for path in paths:
        for records in iter_record_chunks(path, schema, chunk_records):
            ts = records["ts_event"]
            if np.any((ts >= window.rth_open_ns) & (ts < window.close_ns)):
                return True
    return False


def empty_reason(files: SessionFiles, session: dt.date, chunk_records: int) -> str | None:
    """Why the session has no usable futures data (no trade and no 1-min bar in RTH), or None."""
    present = [schema for schema in ("trades", "ohlcv-1m") if files.has(FUTURES, schema)]
    if not present:
        return f"no futures trades or 1-min bars cover {session}"
    if any(has_rth_records(files.get(FUTURES, schema), schema, session, chunk_records) for schema in present):
        return None
    return f"no RTH futures {' or '.join('trades' if s == 'trades' else '1-min bars' for s in present)} on {session}"


def assess(files: SessionFiles, allow_downgrade: bool) -> dict[str, object]:
    """Tier reached vs expected, and what unusable files cost the session; raises
    TierDowngradeError when they take data from it and a downgrade is not allowed."""
    available = set(files.files)
    placed = [u for u in files.unusable if u.placed]
    costly = [u for u in placed if costs_data(available, u.venue, u.schema)]
    reached, expected = tier_shortfall(available, {stand_in_role(u.venue, u.schema) for u in placed})
    listing = "; ".join(map(str, costly))
    if expected != reached:
        downgrade = f"tier {reached} reached, {expected} expected: {listing}"
    elif costly:
        downgrade = f"tier {reached} reached without the data of: {listing}"
    else:
        downgrade = ""
    if downgrade and not allow_downgrade:
        raise TierDowngradeError(f"{downgrade} (fix or remove the file(s), or set allow_tier_downgrade "
                                 "to run the session without them)")
    return {
        "tier": reached,
        "tier_expected": expected,
        "downgrade": downgrade,
        "unusable_files": [{"path": str(u.path), "reason": u.reason, "placed": u.placed} for u in files.unusable],
    }


@dg.asset(
    key=RAW_KEY,
    kinds={"dbn", "parquet"},
    description=__doc__,
    check_specs=[
        session_check(SESSION_HAS_DATA, RAW_KEY,
                      "Futures trades or 1-min bars in RTH (WARN: an empty session is flagged, not failed)"),
        session_check(TIER_AS_EXPECTED, RAW_KEY,
                      "No file that covers the session is unusable (WARN when allow_tier_downgrade "
                      "let the session run at a lower tier)"),
    ],
    **session_asset_defaults("bronze"),
)
def raw_dbn_files(
    context: dg.AssetExecutionContext, market_data: MarketDataResource, lake: LakeResource, settings: PipelineSettings
) -> dg.MaterializeResult:
    """Generate, discover or download each session's DBN files and record them in a manifest
    (venue, schema, path, bytes) together with the data tier the schemas support."""
    source = market_data.build()
    run = RangeRun(context, follows_manifest=False)

    def acquire(session):
        files = source.acquire(session)
        verdict = assess(files, settings.allow_tier_downgrade)
        empty = empty_reason(files, session, settings.chunk_records)
        manifest = manifest_frame(files)
        meta = stamp(settings, BRONZE_SCHEMA_VERSION) | {
            "tier": str(verdict["tier"]), "tier_expected": str(verdict["tier_expected"]),
            "tier_downgrade": str(verdict["downgrade"]), EMPTY_SESSION: empty or "",
            "unusable_files": json.dumps(verdict["unusable_files"]),
        }
        lake.lake().write_frame("raw", "dbn_files", session, manifest, meta)
        if verdict["downgrade"]:
            context.log.error(f"{session}: {verdict['downgrade']} (allow_tier_downgrade is set: running at the lower tier)")
        if empty:
            context.log.warning(f"{session}: {empty}; flagged as an empty session")
        return {
            "files": manifest.height,
            "bytes": int(manifest["bytes"].sum()),
            "tier": verdict["tier"] if not empty else NO_TIER,
            "tier_expected": verdict["tier_expected"],
            "tier_downgrade": verdict["downgrade"],
            "empty_session": empty or "",
            "unusable_files": verdict["unusable_files"],
            "schemas": sorted(f"{v}/{s}" for v, s in files.files),
        }

    run.run(acquire, expected=(SourceError, DbnDecodeError, ValueError))
    empty = {day: s["empty_session"] for day, s in run.per_session.items() if s["empty_session"]}
    downgraded = {day: s["tier_downgrade"] for day, s in run.per_session.items() if s["tier_downgrade"]}
    unplaced = sorted({f["path"] + ": " + f["reason"] for s in run.per_session.values()
                       for f in s["unusable_files"] if not f["placed"]})
    return dg.MaterializeResult(
        metadata=run.metadata(**market_data.describe(), total_bytes=run.total("bytes")),
        check_results=[
            dg.AssetCheckResult(
                check_name=SESSION_HAS_DATA, passed=not empty, severity=dg.AssetCheckSeverity.WARN,
                metadata={"empty_sessions": dg.MetadataValue.json(empty)},
            ),
            dg.AssetCheckResult(
                check_name=TIER_AS_EXPECTED, passed=not downgraded and not unplaced, severity=dg.AssetCheckSeverity.WARN,
                metadata={"downgraded_sessions": dg.MetadataValue.json(downgraded),
                          "files_of_unknown_session": dg.MetadataValue.json(unplaced)},
            ),
        ],
    )
