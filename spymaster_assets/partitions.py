"""Session-date partitions on the CME ES trading calendar."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from .lib.calendar import CALENDAR_END, trading_sessions

PARTITIONS_START = dt.date(2013, 1, 2)


def _non_trading_weekdays(start: dt.date, end: dt.date) -> list[dt.datetime]:
    sessions = set(trading_sessions(start, end))
    day, out = start, []
    while day <= end:
        if day.weekday() < 5 and day not in sessions:
            out.append(dt.datetime.combine(day, dt.time(0, 0)))
        day += dt.timedelta(days=1)
    return out


# One partition per ES session date (ET). Weekends and CME equity holidays are excluded,
# so the partition list *is* the trading calendar and lookback mappings count sessions.
# end_offset=1 makes today's session a partition from midnight ET, so the evening
# schedule can materialize it as soon as the session closes.
trading_sessions_partitions = dg.DailyPartitionsDefinition(
    start_date=PARTITIONS_START.isoformat(),
    timezone="America/New_York",
    end_offset=1,
    exclusions=["0 0 * * 6", "0 0 * * 0", *_non_trading_weekdays(PARTITIONS_START, CALENDAR_END)],
)

single_run_backfill = dg.BackfillPolicy.single_run()
