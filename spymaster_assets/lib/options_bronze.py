"""Options reference data for a session: which options belong to it, and their open interest.

Strike, right and expiry come from the instrument definitions (never parsed from symbol
text). A session's options are those whose underlying is the front-month future, plus the
0DTE products that expire during the session. Open interest comes only from statistics
records with stat_type OPEN_INTEREST, the latest one published before the RTH open.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from .calendar import ET
from .dbn_decode import STAT_TYPE_OPEN_INTEREST

OPTION_CLASSES = ("C", "P")

OPTION_DEFINITION_SCHEMA: dict[str, pl.DataType] = {
    "instrument_id": pl.UInt32,
    "raw_symbol": pl.Utf8,
    "right": pl.Utf8,
    "strike": pl.Float64,
    "expiration": pl.Int64,
    "underlying": pl.Utf8,
    "asset": pl.Utf8,
    "is_0dte": pl.Boolean,
}


def session_option_definitions(definitions: pl.DataFrame, front_symbol: str, session: dt.date) -> pl.DataFrame:
    """The latest definition of every call/put that belongs to the session."""
    expiry_date = (
        pl.from_epoch("expiration", time_unit="ns").dt.replace_time_zone("UTC").dt.convert_time_zone(str(ET)).dt.date()
    )
    return (
        definitions.filter(pl.col("instrument_class").is_in(OPTION_CLASSES))
        .sort(["instrument_id", "ts_recv"])
        .unique("instrument_id", keep="last", maintain_order=True)
        .with_columns((expiry_date == session).fill_null(False).alias("is_0dte"))
        .filter((pl.col("underlying") == front_symbol) | pl.col("is_0dte"))
        .select(
            "instrument_id",
            "raw_symbol",
            pl.col("instrument_class").alias("right"),
            pl.col("strike_price").alias("strike"),
            "expiration",
            "underlying",
            "asset",
            "is_0dte",
        )
        .sort("instrument_id")
    )


def open_interest_before(statistics: pl.DataFrame, option_definitions: pl.DataFrame, rth_open_ns: int) -> pl.DataFrame:
    """Latest OPEN_INTEREST statistic per session option with ts_event before the open."""
    return (
        statistics.filter((pl.col("stat_type") == STAT_TYPE_OPEN_INTEREST) & (pl.col("ts_event") < rth_open_ns))
        .sort(["instrument_id", "ts_event", "ts_recv"])
        .unique("instrument_id", keep="last", maintain_order=True)
        .join(option_definitions, on="instrument_id", how="inner")
        .select(
            "instrument_id",
            "raw_symbol",
            "right",
            "strike",
            "expiration",
            "underlying",
            "is_0dte",
            pl.col("ts_event").alias("oi_ts_event"),
            pl.col("quantity").alias("open_interest"),
        )
        .sort("instrument_id")
    )
