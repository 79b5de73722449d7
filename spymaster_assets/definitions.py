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
from .resources import resources_from_env
from .silver.assets import silver_assets
from .schedules import SESSION_FRESHNESS, daily_market_job, daily_market_schedule, new_dbn_files_sensor
from .warehouse import build_lake_views_asset

session_assets = [raw_dbn_files, *futures_assets, *options_assets, *silver_assets, *gold_assets, *stream_assets]
lake_views = build_lake_views_asset([key for asset in session_assets for key in asset.keys])


def build_definitions(resources: dict[str, dg.ConfigurableResource]) -> dg.Definitions:
    return dg.Definitions(
        assets=[*session_assets, lake_views, *ml_assets, *marts_assets, *report_assets, *stream_report_assets, *analysis_assets],
        jobs=[daily_market_job],
        schedules=[daily_market_schedule],
        sensors=[new_dbn_files_sensor],
        resources=resources,
        # Small runs on a 2-core machine: process-per-step startup costs more than it buys.
        executor=dg.in_process_executor,
    ).map_resolved_asset_specs(
        func=lambda spec: dg.apply_freshness_policy(spec, SESSION_FRESHNESS),
        # The model and marts are rebuilt by the same daily job, so they are due by the same deadline.
        selection=dg.AssetSelection.assets(*session_assets, *ml_assets, *marts_assets),
    )


defs = build_definitions(resources_from_env())
