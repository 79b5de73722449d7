"""Session-date partitions on the CME ES trading calendar."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from .lib.calendar import CALENDAR_END, ET, trading_sessions

PARTITIONS_START = dt.date(2013, 1, 2)
SESSION_CLOSE = dt.time(16, 0)  # RTH close (ET); half days close earlier, so 16:00 is always after the close


def _holidays(start: dt.date, end: dt.date) -> list[dt.datetime]:
    """Weekdays without a session, as the 16:00 ET start of the window they would label."""
    sessions = set(trading_sessions(start, end))
    days = (start + dt.timedelta(days=n) for n in range((end - start).days + 1))
    return [dt.datetime.combine(day, SESSION_CLOSE, tzinfo=ET) for day in days if day.weekday() < 5 and day not in sessions]


# One partition per ES session date (ET), so the partition list *is* the trading calendar and
# offset mappings count sessions (D-1 of a Monday is the Friday). Session D's window runs from its
# close (16:00 ET) to the next weekday's close, and end_offset=1 makes the window that contains
# "now" the last partition: today's session becomes a partition when its RTH closes, and never
# earlier — weekends fall inside Friday's window (the cron has no Saturday or Sunday tick).
# Keys are the window start's date, YYYY-MM-DD = the session date.
# Known limit: Dagster counts end_offset in non-excluded partitions, so from a holiday's 16:00
# until the next session's close that next session is listed one day early (≈9 evenings a year).
trading_sessions_partitions = dg.TimeWindowPartitionsDefinition(
    cron_schedule="0 16 * * 1-5",
    fmt="%Y-%m-%d",
    start=dt.datetime.combine(PARTITIONS_START, SESSION_CLOSE, tzinfo=ET),
    timezone="America/New_York",
    end_offset=1,
    exclusions=_holidays(PARTITIONS_START, CALENDAR_END),
)
