import datetime as dt

import dagster as dg
import pytest

from spymaster_assets.lib.calendar import ET, is_trading_session, ns_to_et, session_window, trading_sessions
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
    assert last_partition(friday) == "2024-12-13"  # the 16:30 tick's session is already a partition
    assert session_for_tick(dt.datetime(2024, 12, 25, 16, 30, tzinfo=ET)) is None


def last_partition(now: dt.datetime) -> str:
    return trading_sessions_partitions.get_partition_keys(current_time=now)[-1]


@pytest.mark.parametrize(("now", "last"), [
    (dt.datetime(2024, 12, 20, 9, 0), "2024-12-19"),       # Friday morning: Friday's session is still open
    (dt.datetime(2024, 12, 20, 15, 59), "2024-12-19"),
    (dt.datetime(2024, 12, 20, 16, 0, 1), "2024-12-20"),   # its RTH has closed: now a partition
    (dt.datetime(2024, 12, 20, 23, 59), "2024-12-20"),     # never tomorrow
    (dt.datetime(2024, 12, 21, 12, 0), "2024-12-20"),      # Saturday
    (dt.datetime(2024, 12, 23, 9, 0), "2024-12-20"),       # Monday before the close
    (dt.datetime(2024, 12, 23, 16, 1), "2024-12-23"),
    (dt.datetime(2024, 12, 24, 13, 30), "2024-12-23"),     # half day: closed at 13:00, listed from 16:00
    (dt.datetime(2024, 12, 25, 10, 0), "2024-12-24"),      # Christmas
    (dt.datetime(2024, 7, 3, 16, 30), "2024-07-03"),       # summer time (EDT)
])
def test_the_last_partition_is_the_latest_closed_session(now, last):
    assert last_partition(now.replace(tzinfo=ET)) == last


def test_known_limit_after_a_holidays_close_the_next_session_is_listed_a_day_early():
    # Dagster counts end_offset in non-excluded partitions: from the holiday's 16:00 the next
    # session (which closes the following day) is already a partition. Pinned so a Dagster
    # change that fixes (or worsens) it is noticed.
    assert last_partition(dt.datetime(2024, 12, 25, 17, 0, tzinfo=ET)) == "2024-12-26"


def test_keys_are_session_dates_and_windows_start_at_the_close():
    keys = trading_sessions_partitions.get_partition_keys(current_time=dt.datetime(2025, 1, 1, tzinfo=ET))
    assert keys == [day.isoformat() for day in trading_sessions(dt.date(2013, 1, 2), dt.date(2024, 12, 31))]
    friday = trading_sessions_partitions.time_window_for_partition_key("2024-12-20")
    assert (friday.start, friday.end) == (dt.datetime(2024, 12, 20, 16, tzinfo=ET), dt.datetime(2024, 12, 23, 16, tzinfo=ET))
    before_christmas = trading_sessions_partitions.time_window_for_partition_key("2024-12-24")
    assert before_christmas.start == dt.datetime(2024, 12, 24, 16, tzinfo=ET)


def test_one_session_back_is_the_previous_trading_session():
    previous = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)
    for session, before in (("2024-12-23", "2024-12-20"), ("2024-12-26", "2024-12-24"), ("2024-07-05", "2024-07-03")):
        upstream = previous.get_upstream_mapped_partitions_result_for_partitions(
            trading_sessions_partitions.subset_with_partition_keys([session]),
            trading_sessions_partitions, trading_sessions_partitions)
        assert upstream.partitions_subset.get_partition_keys() == [before]
