"""Per-session freshness: the latest session whose 18:00 ET deadline has passed must be materialized."""

import datetime as dt

import dagster as dg
import pytest

from spymaster_assets import freshness
from spymaster_assets.definitions import defs, session_freshness_checks, session_freshness_sensor
from spymaster_assets.freshness import SESSION_PARTITION_PRESENT, expected_session
from spymaster_assets.lib.calendar import ET

EPISODES = dg.AssetKey(["gold", "episodes"])
STATE = dg.AssetKey(["silver", "state"])


def at(year, month, day, hour, minute=0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=ET)


@pytest.mark.parametrize(
    ("now", "session"),
    [
        (at(2024, 12, 10, 17, 59), dt.date(2024, 12, 9)),  # Tuesday before the deadline: Monday's
        (at(2024, 12, 10, 18, 0), dt.date(2024, 12, 10)),  # at the deadline: today's
        (at(2024, 12, 9, 9, 0), dt.date(2024, 12, 6)),  # Monday morning: Friday's
        (at(2024, 12, 8, 20, 0), dt.date(2024, 12, 6)),  # Sunday evening: Friday's
        (at(2024, 12, 25, 19, 0), dt.date(2024, 12, 24)),  # Christmas is no session: Christmas Eve's
        (at(2024, 12, 26, 10, 0), dt.date(2024, 12, 24)),
        (dt.datetime(2024, 12, 10, 23, 30, tzinfo=dt.timezone.utc), dt.date(2024, 12, 10)),  # 18:30 ET
    ],
)
def test_expected_session_is_the_latest_one_past_its_deadline(now, session):
    assert expected_session(now) == session


def materialize(instance, key: dg.AssetKey, session: str) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=session))


def test_missing_latest_session_is_stale_even_after_other_sessions_were_built():
    with dg.instance_for_test() as instance:
        materialize(instance, EPISODES, "2024-12-09")
        # a backfill of an old session just ran: a per-asset freshness policy would call this fresh
        materialize(instance, EPISODES, "2024-11-01")
        wednesday_morning = at(2024, 12, 11, 9, 0)

        stale = freshness.session_freshness(instance, EPISODES, wednesday_morning)
        assert not stale.passed
        assert stale.metadata["expected_session"].value == "2024-12-10"
        assert "2024-12-10 is missing" in stale.description

        materialize(instance, EPISODES, "2024-12-10")
        fresh = freshness.session_freshness(instance, EPISODES, wednesday_morning)
        assert fresh.passed and fresh.metadata["expected_session"].value == "2024-12-10"
        # other assets are judged on their own partitions
        assert not freshness.session_freshness(instance, STATE, wednesday_morning).passed


def evaluations_by_asset(result: dg.SensorResult) -> dict[str, bool]:
    return {e.asset_key.to_user_string(): e.passed for e in result.asset_events}


def test_sensor_reports_each_check_when_its_answer_changes(monkeypatch):
    assert session_freshness_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    checked = {key.asset_key.to_user_string() for key in session_freshness_checks.check_keys}
    assert {"bronze/front_month_contract", "silver/state", "gold/episodes"} <= checked
    with dg.instance_for_test() as instance:
        monkeypatch.setattr(freshness, "now_et", lambda: at(2024, 12, 10, 18, 5))
        for key in session_freshness_checks.check_keys:
            materialize(instance, key.asset_key, "2024-12-09")

        first = session_freshness_sensor(dg.build_sensor_context(instance=instance))
        reported = evaluations_by_asset(first)
        assert set(reported) == checked and not any(reported.values())  # today's session is missing
        assert {e.check_name for e in first.asset_events} == {SESSION_PARTITION_PRESENT}

        unchanged = session_freshness_sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
        assert unchanged.asset_events == [] and "unchanged" in unchanged.skip_reason.skip_message

        materialize(instance, EPISODES, "2024-12-10")
        arrived = session_freshness_sensor(dg.build_sensor_context(instance=instance, cursor=unchanged.cursor))
        assert evaluations_by_asset(arrived) == {"gold/episodes": True}

        monkeypatch.setattr(freshness, "now_et", lambda: at(2024, 12, 11, 18, 5))  # next deadline
        next_day = session_freshness_sensor(dg.build_sensor_context(instance=instance, cursor=arrived.cursor))
        assert set(evaluations_by_asset(next_day)) == checked and not any(evaluations_by_asset(next_day).values())


def test_the_check_runs_on_demand_and_is_left_out_of_session_runs(monkeypatch):
    monkeypatch.setattr(freshness, "now_et", lambda: at(2024, 12, 10, 18, 5))
    job = defs.resolve_job_def("daily_market_job")
    assert not [k for k in job.asset_layer.asset_graph.asset_check_keys if k.name == SESSION_PARTITION_PRESENT]
    with dg.instance_for_test() as instance:
        materialize(instance, EPISODES, "2024-12-10")
        result = defs.resolve_implicit_global_asset_job_def().get_subset(
            asset_check_selection={dg.AssetCheckKey(EPISODES, SESSION_PARTITION_PRESENT),
                                   dg.AssetCheckKey(STATE, SESSION_PARTITION_PRESENT)},
            asset_selection=set(),
        ).execute_in_process(instance=instance, raise_on_error=False)
        outcome = {e.asset_key.to_user_string(): e.passed for e in result.get_asset_check_evaluations()}
    assert outcome == {"gold/episodes": True, "silver/state": False}


def test_rebuilt_whole_assets_keep_a_deadline_policy_and_session_assets_a_check():
    checked = {key.asset_key for key in session_freshness_checks.check_keys}
    for spec in defs.resolve_all_asset_specs():
        if spec.group_name in ("warehouse", "marts", "reports"):  # views over the lake; weekly reports
            continue
        if spec.partitions_def is None:
            assert spec.freshness_policy == freshness.DAILY_REBUILD_FRESHNESS, spec.key
        else:
            assert spec.key in checked and spec.freshness_policy is None, spec.key
