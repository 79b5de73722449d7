import datetime as dt

import pytest

from spymaster_assets.lib.calendar import ET, is_trading_session, ns_to_et, session_window
from spymaster_assets.partitions import trading_sessions_partitions
from spymaster_assets.schedules import session_for_tick


def test_session_window_is_dst_aware():
    winter = session_window(dt.date(2024, 3, 8))  # EST, UTC-5
    summer = session_window(dt.date(2024, 3, 11))  # EDT, UTC-4 (DST began 2024-03-10)
    assert ns_to_et(winter.rth_open_ns).time() == dt.time(9, 30)
    assert ns_to_et(summer.rth_open_ns).time() == dt.time(9, 30)
    assert dt.datetime.fromtimestamp(winter.rth_open_ns / 1e9, dt.timezone.utc).hour == 14
    assert dt.datetime.fromtimestamp(summer.rth_open_ns / 1e9, dt.timezone.utc).hour == 13


def test_monday_session_opens_sunday_evening_and_keeps_to_16h():
    window = session_window(dt.date(2024, 12, 9))
    opened = ns_to_et(window.globex_open_ns)
    assert (opened.date(), opened.time()) == (dt.date(2024, 12, 8), dt.time(18, 0))
    assert ns_to_et(window.close_ns).time() == dt.time(16, 0)
    assert window.opening_range_end_ns - window.rth_open_ns == 15 * 60 * 10**9
    assert window.analysis_end_ns - window.rth_open_ns == 3 * 3600 * 10**9


def test_half_day_closes_early():
    window = session_window(dt.date(2024, 11, 29))  # day after Thanksgiving
    assert window.half_day
    assert ns_to_et(window.close_ns).time() == dt.time(13, 0)


@pytest.mark.parametrize("day", [dt.date(2024, 12, 25), dt.date(2024, 12, 7), dt.date(2024, 1, 1), dt.date(2024, 1, 15), dt.date(2024, 7, 4)])
def test_holidays_and_weekends_are_not_sessions(day):
    assert not is_trading_session(day)
    with pytest.raises(ValueError, match="not a CME ES trading session"):
        session_window(day)
    assert day.isoformat() not in trading_sessions_partitions.get_partition_keys()


def test_partitions_are_the_trading_calendar():
    keys = trading_sessions_partitions.get_partition_keys()
    assert {"2013-10-07", "2013-10-10", "2024-12-12", "2024-12-24"} <= set(keys)
    assert "2024-12-25" not in keys and "2024-07-04" not in keys


def test_schedule_tick_targets_the_session_that_just_closed():
    friday = dt.datetime(2024, 12, 13, 16, 30, tzinfo=ET)
    assert session_for_tick(friday) == "2024-12-13"
    assert session_for_tick(dt.datetime(2024, 12, 25, 16, 30, tzinfo=ET)) is None
