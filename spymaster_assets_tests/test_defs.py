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


FRESHNESS_CHECKS = {"SESSION_PARTITION_PRESENT"}


def checks_of(key: dg.AssetKey) -> set[str]:
    return {check.name for check in defs.resolve_asset_graph().asset_check_keys if check.asset_key == key}


def test_every_session_asset_backfills_one_session_per_run_and_is_fresh_by_18h():
    graph = defs.resolve_asset_graph()
    for spec in defs.resolve_all_asset_specs():
        if spec.group_name in ("warehouse", "marts", "reports"):  # views over the lake; weekly reports
            continue
        node = graph.get(spec.key)
        if not node.is_materializable:  # a declared dependency defined elsewhere
            continue
        if node.is_partitioned:  # no policy: a backfill launches one run per session, tagged with its partition
            assert node.backfill_policy is None, spec.key
        assert spec.freshness_policy is not None or not checks_of(spec.key).isdisjoint(FRESHNESS_CHECKS), spec.key


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


def test_a_backfill_by_partition_names_targets_exactly_those_sessions():
    """What the UI's backfill dialog sends (partition names, whole graph) targets every session
    asset at the requested sessions only: no fan-out through the as-of (D-1) or warm-up edges."""
    import time

    from dagster._core.execution.asset_backfill import AssetBackfillData

    graph = defs.resolve_asset_graph()
    keys = list(graph.get_all_asset_keys())
    with dg.instance_for_test() as instance:
        for names in (["2024-12-19"], ["2024-12-06", "2024-12-09", "2024-12-10"]):  # a range across a weekend
            target = AssetBackfillData.from_asset_partitions(
                asset_graph=graph, partition_names=names, asset_selection=keys, dynamic_partitions_store=instance,
                backfill_start_timestamp=time.time(), all_partitions=False).target_subset
            for key in keys:
                if graph.get(key).is_partitioned:
                    assert target.get_partitions_subset(key).get_partition_keys() == names, key
                else:
                    assert key in target.non_partitioned_asset_keys, key


def test_raw_and_bronze_checks_are_evaluated_per_session():
    from spymaster_assets.partitions import trading_sessions_partitions

    graph = defs.resolve_asset_graph()
    for key in BRONZE_KEYS:
        checks = graph.get_check_keys_for_assets({dg.AssetKey.from_user_string(key)})
        assert checks, key
        for check_key in checks:
            if check_key.name in FRESHNESS_CHECKS:  # about the latest session, evaluated by a sensor
                continue
            assert graph.get(check_key).partitions_def == trading_sessions_partitions, check_key
