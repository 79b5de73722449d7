"""The daily path's fixed costs: reports leave the daily run for a weekly schedule; the warehouse
views and the dbt marts are views over the lake, out of the daily run, re-created only when the
lake gains a table or the dbt code changes (and weekly, with the dbt tests), yet a session's rows are
in them right after its daily run; a dbt invocation pays neither `dbt --version`, an in-process
adapter nor a full parse once the home has dbt's parse state."""

import importlib.metadata
import subprocess
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from dagster_dbt import DbtCliResource
from packaging import version

from spymaster_assets.definitions import build_definitions, defs
from spymaster_assets.lake import Lake
from spymaster_assets.marts import PARTIAL_PARSE_FILE, dbt_resource
from spymaster_assets.schedules import (WEEKLY_REPORTS_CRON, warehouse_layout_sensor, warehouse_staleness,
                                        weekly_reports_schedule)
from spymaster_assets.warehouse import LAKE_VIEWS_KEY
from spymaster_assets_tests.conftest import SYNTHETIC_SESSIONS
from spymaster_assets_tests.helpers import build_warehouse, resources_for, run_range


def keys_of_groups(*groups: str) -> set[dg.AssetKey]:
    graph = defs.resolve_asset_graph()
    return {key for key in graph.get_all_asset_keys() if graph.get(key).group_name in groups}


def test_reports_and_the_warehouse_run_weekly_and_never_in_the_daily_run():
    reports, warehouse = keys_of_groups("reports"), keys_of_groups("warehouse", "marts")
    assert reports and LAKE_VIEWS_KEY in warehouse and dg.AssetKey(["marts", "daily_level_stats"]) in warehouse
    daily = defs.resolve_job_def("daily_market_job").asset_layer.selected_asset_keys
    weekly = defs.resolve_job_def("weekly_reports_job")
    assert weekly.asset_layer.selected_asset_keys == reports | warehouse and not daily & (reports | warehouse)
    # the weekly run tests the marts: every dbt test (asset check) is in it
    marts_checks = {key for key in defs.resolve_asset_graph().asset_check_keys if key.asset_key in warehouse}
    assert len(marts_checks) > 60 and marts_checks <= set(weekly.asset_layer.asset_graph.asset_check_keys)
    assert defs.resolve_job_def("warehouse_job").asset_layer.selected_asset_keys == warehouse
    assert weekly_reports_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert weekly_reports_schedule.cron_schedule == WEEKLY_REPORTS_CRON == "0 6 * * 6"  # Saturdays, after Friday's run
    assert weekly_reports_schedule.execution_timezone == "America/New_York"


def test_dbt_version_is_read_without_running_dbt(tmp_path, monkeypatch):
    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"ran {args}")

    monkeypatch.setattr(subprocess, "check_output", no_subprocess)
    resource = dbt_resource(tmp_path)
    assert resource._cli_version == version.parse(importlib.metadata.version("dbt-core"))
    # The override replaces a private method of DbtCliResource: fail loudly if dagster-dbt renames it.
    assert callable(getattr(DbtCliResource, "_initialize_dbt_core_adapter", None))
    assert resource._initialize_dbt_core_adapter(["build"]) is None


def parse(resource) -> str:
    """One `dbt parse` through the resource, its parse state kept; returns dbt's log."""
    invocation = resource.cli(["parse"])
    invocation.wait()
    resource.keep_parse_state(invocation)
    return (Path(invocation.target_path) / "dbt.log").read_text()


@pytest.mark.slow
def test_the_second_invocation_in_a_home_parses_only_what_changed(tmp_path):
    resource = dbt_resource(tmp_path)
    first = parse(resource)
    state = tmp_path / PARTIAL_PARSE_FILE
    assert state.is_file() and "UnableToPartialParse" in first  # a new home: a full parse (profile differs)
    kept = state.read_bytes()
    for _ in range(2):  # twice: a state re-written by a partial parse would break the run after it
        assert "UnableToPartialParse" not in parse(resource)
    assert state.read_bytes() == kept


def lake_with_tables(root, *tables: str) -> Lake:
    for table in tables:
        partition = root / "lake" / table / "date=2024-12-09"
        partition.mkdir(parents=True)
        pl.DataFrame({"x": [1]}).write_parquet(partition / "part-0.parquet")
    return Lake(root / "lake")


def sensor_result(instance, home):
    context = dg.build_sensor_context(instance=instance, definitions=defs,
                                      resources={"lake": resources_for(home)["lake"]})
    return warehouse_layout_sensor(context)


def test_the_warehouse_sensor_waits_for_tables_and_asks_again_when_they_change(tmp_path):
    with dg.instance_for_test() as instance:
        assert isinstance(sensor_result(instance, tmp_path), dg.SkipReason)  # an empty lake: nothing to view
        lake_with_tables(tmp_path, "silver/events")
        first = sensor_result(instance, tmp_path)
        assert isinstance(first, dg.RunRequest) and first.job_name in (None, "warehouse_job")
        reasons = warehouse_staleness(instance, defs.resolve_asset_graph(), Lake(tmp_path / "lake"))
        assert any("silver_events" in r for r in reasons) and any("never built" in r for r in reasons)
        assert sensor_result(instance, tmp_path).run_key == first.run_key  # same state, same run key: one run
        lake_with_tables(tmp_path, "silver/labels")
        assert sensor_result(instance, tmp_path).run_key != first.run_key


@pytest.mark.slow
def test_a_sessions_rows_are_in_the_marts_right_after_its_daily_run(tmp_path):
    """Session 1, then the warehouse (as the sensor launches it); then session 2's daily run alone:
    it materializes no view or mart, and the marts and lake views hold session 2's rows."""
    first, second = SYNTHETIC_SESSIONS
    definitions = build_definitions(resources_for(tmp_path, source="synthetic", synthetic_scale="tiny"))
    with dg.instance_for_test() as instance:
        assert run_range(definitions, first, first, instance).success
        build_warehouse(definitions, instance)
        built = warehouse_staleness(instance, definitions.resolve_asset_graph(), Lake(tmp_path / "lake"))
        assert built == []
        layout_before = instance.get_latest_materialization_event(LAKE_VIEWS_KEY).asset_materialization.metadata["layout"]

        daily = run_range(definitions, second, second, instance)
        assert daily.success
        materialized = {e.asset_key for e in daily.get_asset_materialization_events()}
        assert materialized and not materialized & keys_of_groups("warehouse", "marts")
        # The sensor asks for a rebuild only if session 2 wrote a table session 1 did not have.
        new_tables = set(warehouse_staleness(instance, definitions.resolve_asset_graph(), Lake(tmp_path / "lake")))
        layout_after = sorted(p.parent.name + "_" + p.name for p in (tmp_path / "lake").glob("*/*")
                              if any(p.glob("date=*/part-*.parquet")))
        assert bool(new_tables) == (layout_after != layout_before.value)

    events = pl.read_parquet(tmp_path / "lake" / "silver" / "events" / f"date={second}" / "part-*.parquet")
    assert events.height > 0
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        in_view = con.sql(f"select count(*) from silver_events where date = '{second}'").fetchone()[0]
        in_staging = con.sql(f"select count(*) from staging.stg_events where session = '{second}'").fetchone()[0]
        touches = con.sql(f"select sum(touches) from marts.daily_level_stats where session = '{second}'").fetchone()[0]
        kinds = {r[0] for r in con.sql(f"select level_kind from marts.daily_level_stats where session = '{second}'").fetchall()}
    assert in_view == in_staging == touches == events.height
    assert kinds == set(events["level_kind"])
