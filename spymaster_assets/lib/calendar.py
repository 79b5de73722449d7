"""The CME ES trading calendar and the clock conventions of SPEC §2.

A *session date* is the America/New_York calendar date of the RTH session. The Globex
session that belongs to it opens at 18:00 ET on the previous trading evening; bronze keeps
[18:00 ET previous evening, 16:00 ET] and RTH analysis uses 09:30–12:30 ET.
"""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo

ET = ZoneInfo("America/New_York")
UTC = dt.timezone.utc
NS_PER_S = 1_000_000_000

CME_CALENDAR = "CME_Equity"
CASH_CALENDAR = "NYSE"
CALENDAR_START = dt.date(2010, 1, 1)
CALENDAR_END = dt.date(2030, 12, 31)


def et_to_ns(session: dt.date, clock: dt.time, day_offset: int = 0) -> int:
    """Nanoseconds since the epoch (UTC) of an ET wall-clock time on `session + day_offset` (DST-aware)."""
    local = dt.datetime.combine(session + dt.timedelta(days=day_offset), clock, tzinfo=ET)
    return int(local.timestamp()) * NS_PER_S + local.microsecond * 1000


def ns_to_et(ts_ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts_ns / NS_PER_S, tz=UTC).astimezone(ET)


@dataclass(frozen=True)
class SessionWindow:
    """Clock boundaries of one session, as int64 ns UTC."""

    session: dt.date
    globex_open_ns: int  # 18:00 ET on the previous trading evening
    premarket_start_ns: int  # 04:00 ET
    rth_open_ns: int  # 09:30 ET
    opening_range_end_ns: int  # 09:45 ET
    analysis_end_ns: int  # 12:30 ET: the first three hours
    close_ns: int  # 16:00 ET, or the early close on half days
    half_day: bool

    @property
    def keep_start_ns(self) -> int:
        return self.globex_open_ns

    @property
    def keep_end_ns(self) -> int:
        return self.close_ns


@lru_cache(maxsize=1)
def _schedule():
    """Session dates and their RTH close.

    A session is a day on which both CME equity futures and the NYSE cash session trade.
    On exchange holidays such as MLK Day or July 4, Globex runs an abbreviated session with
    no cash open whose trades belong to the next trade date, so those days are not sessions.
    Early closes (e.g. the day after Thanksgiving) are the cash market's early close.
    """
    import pandas_market_calendars as mcal

    span = (CALENDAR_START.isoformat(), CALENDAR_END.isoformat())
    cme = mcal.get_calendar(CME_CALENDAR).schedule(*span)
    cash = mcal.get_calendar(CASH_CALENDAR).schedule(*span)
    cme_days = {ts.date() for ts in cme.index}
    closes = {
        ts.date(): close.to_pydatetime() for ts, close in zip(cash.index, cash["market_close"]) if ts.date() in cme_days
    }
    return sorted(closes), closes


def trading_sessions(start: dt.date | None = None, end: dt.date | None = None) -> list[dt.date]:
    """CME ES trading session dates in [start, end] (weekends and exchange holidays excluded)."""
    sessions, _ = _schedule()
    return [d for d in sessions if (start is None or d >= start) and (end is None or d <= end)]


def is_trading_session(day: dt.date) -> bool:
    sessions, closes = _schedule()
    return day in closes


def previous_session(day: dt.date) -> dt.date:
    sessions, _ = _schedule()
    earlier = [d for d in sessions if d < day]
    if not earlier:
        raise ValueError(f"no trading session before {day}")
    return earlier[-1]


def sessions_before(day: dt.date, count: int) -> list[dt.date]:
    """The `count` trading sessions strictly before `day`, oldest first (a trailing window)."""
    sessions, _ = _schedule()
    end = bisect.bisect_left(sessions, day)
    return sessions[max(0, end - count):end]


def session_window(session: dt.date) -> SessionWindow:
    """Boundaries of a session; raises ValueError for a non-trading day (weekend or holiday)."""
    sessions, closes = _schedule()
    if session not in closes:
        raise ValueError(f"{session} is not a CME ES trading session (weekend or exchange holiday)")
    rth_close = closes[session].astimezone(ET)
    half_day = rth_close.time() < dt.time(16, 0)
    # Globex reopens at 18:00 ET on the calendar evening before every session
    # (Sunday evening for Monday, the holiday evening after a Monday holiday).
    return SessionWindow(
        session=session,
        globex_open_ns=et_to_ns(session, dt.time(18, 0), -1),
        premarket_start_ns=et_to_ns(session, dt.time(4, 0)),
        rth_open_ns=et_to_ns(session, dt.time(9, 30)),
        opening_range_end_ns=et_to_ns(session, dt.time(9, 45)),
        analysis_end_ns=et_to_ns(session, dt.time(12, 30)),
        close_ns=et_to_ns(session, rth_close.time()),
        half_day=half_day,
    )
