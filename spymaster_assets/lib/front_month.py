"""Which ES outright is the front month of a session, chosen before the session opens.

The rule (SPEC §5: chosen from data known before the session's RTH open):

1. **Overnight volume.** The front month of session D is the outright `ES[FGHJKMNQUVXZ]\\d`
   with the largest volume over D's own overnight, [18:00 ET on the previous evening,
   09:30 ET on D) — the first part of D's Globex trade date, which bronze keeps with every
   session and which every source delivers (daily files, the Databento window, the
   synthetic market). For 1-minute bars a bar counts when it *opens* before 09:30, i.e.
   closes at or before the open.
2. **Roll calendar** when no outright traded overnight (files that start at the open, a data
   gap): the nearest-expiry outright listed in the session's symbology whose CME roll date
   (the Thursday eight calendar days before the third-Friday expiry) is after D; on and
   after its roll date the next expiry is the front month. It needs no volume at all.
3. **Ties** go to the nearer expiry: in roll week the nearby contract stays the front
   month until the deferred one strictly out-trades it.

Why D's overnight, and not the previous session's volume (the SPEC's example): D's answer
then depends only on D's own files, so it is the same whichever sessions happen to be in the
lake when D is built (the first session of a lake, gaps, per-session runs in any order); and
the overnight is already part of D's trade date, so on the roll day it sees the migration
the previous session's RTH has not seen yet. Why not the whole session (the former rule):
that is look-ahead — on a roll-eve session afternoon volume in the deferred contract changed
the chosen contract and with it every morning value.

`dominance` is the chosen contract's share of the session's outright RTH volume, reported
after the fact; below `min_dominance` the session is flagged `roll_contaminated` so that
downstream statistics can exclude or stratify it. Spreads (`ESZ4-ESH5`), micros (`MESZ4`)
and options never qualify: they are excluded by symbol, never by a price band.
"""

from __future__ import annotations

import datetime as dt
import re

import polars as pl

ES_OUTRIGHT = re.compile(r"^ES(?P<month>[FGHJKMNQUVXZ])(?P<year>\d{1,2})$")
MONTH_CODES = "FGHJKMNQUVXZ"
ROLL_DAYS_BEFORE_EXPIRY = 8  # CME equity index roll date: the Thursday 8 days before the third-Friday expiry
DEFAULT_MIN_DOMINANCE = 0.60

CHOSEN_BY_OVERNIGHT_VOLUME = "overnight_volume"
CHOSEN_BY_ROLL_CALENDAR = "roll_calendar"

FRONT_MONTH_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.Utf8,
    "instrument_id": pl.UInt32,
    "expiry": pl.Date,
    "overnight_volume": pl.UInt64,
    "rth_volume": pl.UInt64,
    "share": pl.Float64,
    "is_front": pl.Boolean,
    "chosen_by": pl.Utf8,
    "dominance": pl.Float64,
    "roll_contaminated": pl.Boolean,
    "volume_source": pl.Utf8,
}

SESSION_VOLUME_SCHEMA: dict[str, pl.DataType] = {
    "instrument_id": pl.UInt32,
    "overnight_volume": pl.UInt64,
    "rth_volume": pl.UInt64,
}


class NoFrontMonthError(ValueError):
    """No ES outright to choose (none listed or traded) or none traded in RTH: an empty or non-ES session."""


def is_es_outright(symbol: str) -> bool:
    return bool(ES_OUTRIGHT.match(symbol))


def third_friday(year: int, month: int) -> dt.date:
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(4 - first.weekday()) % 7 + 14)


def contract_expiry(symbol: str, session: dt.date) -> dt.date:
    """Third-Friday expiry of an ES outright as seen from `session`.

    Symbols carry only the last one (ESZ4) or two (ESZ24) digits of the year; the year is
    the first one with those digits whose expiry is on or after the session, because a
    contract in a session's symbology has not expired yet.
    """
    match = ES_OUTRIGHT.match(symbol)
    if match is None:
        raise ValueError(f"{symbol!r} is not an ES outright")
    month = MONTH_CODES.index(match["month"]) + 1
    modulus = 10 ** len(match["year"])
    year = session.year - session.year % modulus + int(match["year"])
    while third_friday(year, month) < session:
        year += modulus
    return third_friday(year, month)


def session_volume(
    frame: pl.DataFrame, size_column: str, *, rth_open_ns: int, close_ns: int
) -> pl.DataFrame:
    """Per instrument, volume before the RTH open and during RTH, from trades (`size`) or 1-min bars (`volume`).

    Rows at or after the close are ignored; callers pass the session's kept window, so rows
    before the open are the overnight. A 1-min bar is stamped with its open, so the bar that
    opens at 09:29 closes at the open and counts as overnight.
    """
    size = pl.col(size_column).cast(pl.UInt64)
    before_open = pl.col("ts_event") < rth_open_ns
    return (
        frame.filter(pl.col("ts_event") < close_ns)
        .group_by("instrument_id")
        .agg(
            size.filter(before_open).sum().alias("overnight_volume"),
            size.filter(~before_open).sum().alias("rth_volume"),
        )
        .cast(SESSION_VOLUME_SCHEMA)  # type: ignore[arg-type]
    )


def outright_volumes(volume: pl.DataFrame, symbols: dict[int, str], session: dt.date) -> pl.DataFrame:
    """One row per ES outright listed in `symbols` (volumes 0 when it did not trade), with its expiry."""
    outrights = {iid: symbol for iid, symbol in symbols.items() if is_es_outright(symbol)}
    listed = pl.DataFrame(
        {
            "instrument_id": list(outrights),
            "symbol": list(outrights.values()),
            "expiry": [contract_expiry(symbol, session) for symbol in outrights.values()],
        },
        schema={"instrument_id": pl.UInt32, "symbol": pl.Utf8, "expiry": pl.Date},
    )
    return (
        listed.join(volume.cast(SESSION_VOLUME_SCHEMA), on="instrument_id", how="left")  # type: ignore[arg-type]
        .with_columns(pl.col("overnight_volume", "rth_volume").fill_null(0))
        # a symbol re-listed under a second id within the window is one contract
        .group_by("symbol", "expiry")
        .agg(pl.col("instrument_id").min(), pl.col("overnight_volume", "rth_volume").sum())
        .sort("expiry")
    )


def choose_front_month(
    volume: pl.DataFrame,
    symbols: dict[int, str],
    session: dt.date,
    *,
    volume_source: str,
    min_dominance: float = DEFAULT_MIN_DOMINANCE,
) -> pl.DataFrame:
    """One row per ES outright with its overnight and RTH volume; the front month has `is_front`.

    `volume` has columns instrument_id, overnight_volume, rth_volume (see `session_volume`);
    `symbols` maps instrument_id → raw symbol for the session. Only overnight volume (and,
    without any, the roll calendar) chooses; RTH volume only measures the choice. Rows are
    the outrights that traded in the session plus the chosen one, nearest expiry first.
    """
    outrights = outright_volumes(volume, symbols, session)
    rth_total = int(outrights["rth_volume"].sum())
    if rth_total == 0:
        raise NoFrontMonthError(f"{session}: no ES outright traded during RTH")
    if outrights["overnight_volume"].sum() > 0:
        chosen_by = CHOSEN_BY_OVERNIGHT_VOLUME
        front = outrights.sort(["overnight_volume", "expiry"], descending=[True, False])["symbol"][0]
    else:
        chosen_by = CHOSEN_BY_ROLL_CALENDAR
        roll_date = pl.col("expiry") - pl.duration(days=ROLL_DAYS_BEFORE_EXPIRY)
        front = outrights.filter(roll_date > session)["symbol"].first()
        if front is None:
            raise NoFrontMonthError(f"{session}: no outright traded overnight and none listed before its roll date")
    is_front = pl.col("symbol") == front
    dominance = float(outrights.filter(is_front)["rth_volume"].sum()) / rth_total
    return outrights.filter(is_front | (pl.col("overnight_volume") > 0) | (pl.col("rth_volume") > 0)).select(
        "symbol",
        pl.col("instrument_id").cast(pl.UInt32),
        "expiry",
        "overnight_volume",
        "rth_volume",
        (pl.col("rth_volume") / rth_total).alias("share"),
        is_front.alias("is_front"),
        pl.lit(chosen_by).alias("chosen_by"),
        pl.lit(dominance).alias("dominance"),
        pl.lit(dominance < min_dominance).alias("roll_contaminated"),
        pl.lit(volume_source).alias("volume_source"),
    )


def front_symbol(front_month: pl.DataFrame) -> str:
    return front_month.filter("is_front")["symbol"].item()


def front_instrument_ids(front_month: pl.DataFrame) -> list[int]:
    return front_month.filter("is_front")["instrument_id"].to_list()
