"""raw/dbn_files: the session's DBN files, acquired from the configured source."""


import dagster as dg

from ..lib.tiers import NO_TIER, session_tier
from ..resources import LakeResource, MarketDataResource, PipelineSettings
from ..sources.base import SourceError
from ..partitioned import RangeRun, session_asset_defaults, session_check, stamp
from . import BRONZE_SCHEMA_VERSION
from .manifest import manifest_frame

HAS_FILES = "HAS_FILES"


@dg.asset(
    key=["raw", "dbn_files"],
    kinds={"dbn", "parquet"},
    description=__doc__,
    check_specs=[session_check(HAS_FILES, ["raw", "dbn_files"], "Every session has at least one futures DBN file", blocking=True)],
    **session_asset_defaults("bronze"),
)
def raw_dbn_files(
    context: dg.AssetExecutionContext, market_data: MarketDataResource, lake: LakeResource, settings: PipelineSettings
) -> dg.MaterializeResult:
    """Generate, discover or download each session's DBN files and record them in a manifest
    (venue, schema, path, bytes) together with the data tier the schemas support."""
    source = market_data.build()
    run = RangeRun(context)

    def acquire(session):
        files = source.acquire(session)
        manifest = manifest_frame(files)
        lake.lake().write_frame("raw", "dbn_files", session, manifest, stamp(settings, BRONZE_SCHEMA_VERSION))
        return {
            "files": manifest.height,
            "bytes": int(manifest["bytes"].sum()),
            "tier": session_tier(set(files.files)),
            "schemas": sorted(f"{v}/{s}" for v, s in files.files),
        }

    run.run(acquire, expected=(SourceError, ValueError))
    empty = sorted(day for day, s in run.per_session.items() if s["tier"] == NO_TIER)
    return dg.MaterializeResult(
        metadata=run.metadata(**market_data.describe(), total_bytes=run.total("bytes")),
        check_results=[
            dg.AssetCheckResult(
                check_name=HAS_FILES,
                passed=not empty,
                metadata={"sessions_without_futures_data": dg.MetadataValue.json(empty)},
            )
        ],
    )
