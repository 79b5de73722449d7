"""The code location loads, and its job, schedule and policies are wired as documented."""

import datetime as dt

import dagster as dg

from spymaster_assets.definitions import defs
from spymaster_assets.lib.calendar import ET
from spymaster_assets.schedules import daily_market_schedule

BRONZE_KEYS = {
    "raw/dbn_files",
    "bronze/front_month_contract",
    "bronze/futures_trades",
    "bronze/futures_mbp10",
    "bronze/futures_ohlcv_1m",
    "bronze/options_definitions",
    "bronze/options_trades",
    "bronze/options_mbp1",
    "bronze/options_open_interest",
}


def test_definitions_load_with_the_bronze_graph():
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert BRONZE_KEYS <= keys
    mbp10 = graph.get(dg.AssetKey(["bronze", "futures_mbp10"]))
    assert {k.to_user_string() for k in mbp10.parent_keys} == {"raw/dbn_files", "bronze/front_month_contract"}


def test_every_session_asset_is_range_safe_and_fresh_by_18h():
    for spec in defs.resolve_all_asset_specs():
        if spec.group_name in ("warehouse", "reports"):  # unpartitioned: recomputed from whatever exists
            continue
        node = defs.resolve_asset_graph().get(spec.key)
        if not node.is_materializable:  # a declared dependency defined elsewhere (e.g. ml/break_predictions)
            continue
        assert node.backfill_policy == dg.BackfillPolicy.single_run(), spec.key
        assert spec.freshness_policy is not None, spec.key


def test_schedule_is_running_and_targets_todays_session():
    assert daily_market_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=dt.datetime(2024, 12, 13, 16, 30, tzinfo=ET)
        )
        request = daily_market_schedule(context)
        assert isinstance(request, dg.RunRequest) and request.partition_key == "2024-12-13"
        holiday = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=dt.datetime(2024, 12, 25, 16, 30, tzinfo=ET)
        )
        assert isinstance(daily_market_schedule(holiday), dg.SkipReason)
