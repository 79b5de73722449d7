"""The Spymaster code location: every asset, check, job, schedule and sensor."""

import dagster as dg

from .bronze.futures import futures_assets
from .bronze.options import options_assets
from .bronze.raw import raw_dbn_files
from .gold.assets import gold_assets, report_assets
from .gold.streams import stream_assets, stream_report_assets
from .marts import marts_assets
from .ml.analyses import analysis_assets
from .ml.assets import ml_assets
from .ml.projections import projection_assets, projection_report_assets
from .resources import resources_from_env
from .silver.assets import silver_assets
from .freshness import build_session_freshness, with_daily_rebuild_freshness
from .schedules import (daily_market_job, daily_market_schedule, new_dbn_files_sensor, warehouse_job,
                        warehouse_layout_sensor, weekly_reports_job, weekly_reports_schedule)
from .warehouse import build_lake_views_asset

session_assets = [raw_dbn_files, *futures_assets, *options_assets, *silver_assets, *gold_assets, *stream_assets,
                  *projection_assets]
# Lineage of the views: every session-partitioned table (the views themselves cover whatever the lake holds).
lake_views = build_lake_views_asset([key for asset in [*session_assets, *ml_assets] if asset.partitions_def is not None
                                     for key in asset.keys])
# Everything the daily job builds is due by 18:00 ET: per session partition where partitioned,
# by a freshness policy where rebuilt whole. (The marts are views over the lake: current whenever
# the session's partitions are.)
daily_assets = [*session_assets, *ml_assets]
session_freshness_checks, session_freshness_sensor = build_session_freshness(
    [key for asset in daily_assets if asset.partitions_def is not None for key in asset.keys]
)


def build_definitions(resources: dict[str, dg.ConfigurableResource]) -> dg.Definitions:
    return dg.Definitions(
        assets=[*session_assets, lake_views, *with_daily_rebuild_freshness(ml_assets), *marts_assets,
                *report_assets, *stream_report_assets, *projection_report_assets,
                *analysis_assets],
        asset_checks=[session_freshness_checks],
        jobs=[daily_market_job, warehouse_job, weekly_reports_job],
        schedules=[daily_market_schedule, weekly_reports_schedule],
        sensors=[new_dbn_files_sensor, session_freshness_sensor, warehouse_layout_sensor],
        resources=resources,
        # Small runs on a 2-core machine: process-per-step startup costs more than it buys.
        executor=dg.in_process_executor,
    )


defs = build_definitions(resources_from_env())
