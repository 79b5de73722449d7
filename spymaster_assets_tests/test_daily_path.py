"""The daily path's fixed costs: reports leave the daily run for a weekly schedule, and a dbt
invocation pays neither `dbt --version`, an in-process adapter nor a full parse once the home has
dbt's parse state."""

import importlib.metadata
import subprocess
from pathlib import Path

import dagster as dg
import pytest
from dagster_dbt import DbtCliResource
from packaging import version

from spymaster_assets.definitions import defs
from spymaster_assets.marts import PARTIAL_PARSE_FILE, dbt_resource
from spymaster_assets.schedules import WEEKLY_REPORTS_CRON, weekly_reports_schedule


def test_reports_run_weekly_and_never_in_the_daily_run():
    graph = defs.resolve_asset_graph()
    reports = {key for key in graph.get_all_asset_keys() if graph.get(key).group_name == "reports"}
    assert reports
    daily = defs.resolve_job_def("daily_market_job").asset_layer.selected_asset_keys
    weekly = defs.resolve_job_def("weekly_reports_job").asset_layer.selected_asset_keys
    assert weekly == reports and not daily & reports
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
