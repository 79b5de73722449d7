"""Shared test plumbing: resources on a temp home, and range runs of the daily job."""

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from spymaster_assets.marts import dbt_resource
from spymaster_assets.resources import LakeResource, MarketDataResource, MlflowResource, PipelineSettings

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def resources_for(home: Path, **market) -> dict:
    return {
        "lake": LakeResource(root=str(home / "lake")),
        "market_data": MarketDataResource(raw_root=str(home / "raw"), **market),
        "settings": PipelineSettings(),
        "duckdb": DuckDBResource(database=str(home / "warehouse.duckdb")),
        "mlflow": MlflowResource(home=str(home)),
        "dbt": dbt_resource(home),
    }


def run_range(defs: dg.Definitions, first: str, last: str, instance) -> dg.ExecuteInProcessResult:
    """One range run of the daily job, as `dg launch --partition-range` or a UI backfill makes it."""
    job = defs.resolve_job_def("daily_market_job")
    return job.execute_in_process(instance=instance, tags={RANGE_START: first, RANGE_END: last}, raise_on_error=False)


def build_warehouse(defs: dg.Definitions, instance) -> dg.ExecuteInProcessResult:
    """The DuckDB lake views and the dbt marts, as warehouse_layout_sensor launches them after a run
    that wrote a new lake table (the daily job leaves them out: they read the lake in place)."""
    result = defs.resolve_job_def("warehouse_job").execute_in_process(instance=instance, raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result
