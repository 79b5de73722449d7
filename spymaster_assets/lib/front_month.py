"""Which ES outright is the front month of a session, and how dominant it is.

The front month is the outright `ES[FGHJKMNQUVXZ]\\d` with the largest RTH volume. Spreads
(`ESZ4-ESH5`), micros (`MESZ4`) and options never qualify: they are excluded by symbol,
never by a price band. During roll week volume migrates to the next contract; a session
whose front month has less than `min_dominance` of outright RTH volume is flagged
`roll_contaminated` so that downstream statistics can exclude or stratify it.
"""

from __future__ import annotations

import re

import polars as pl

ES_OUTRIGHT = re.compile(r"^ES[FGHJKMNQUVXZ]\d{1,2}$")
DEFAULT_MIN_DOMINANCE = 0.60

FRONT_MONTH_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.Utf8,
    "instrument_id": pl.UInt32,
    "rth_volume": pl.UInt64,
    "share": pl.Float64,
    "is_front": pl.Boolean,
    "dominance": pl.Float64,
    "roll_contaminated": pl.Boolean,
    "volume_source": pl.Utf8,
}


class NoFrontMonthError(ValueError):
    """No ES outright traded in RTH: an empty or non-ES session."""


def is_es_outright(symbol: str) -> bool:
    return bool(ES_OUTRIGHT.match(symbol))


def choose_front_month(
    volume_by_instrument: pl.DataFrame,
    symbols: dict[int, str],
    *,
    volume_source: str,
    min_dominance: float = DEFAULT_MIN_DOMINANCE,
) -> pl.DataFrame:
    """One row per ES outright with its RTH volume and share; the front month has `is_front`.

    `volume_by_instrument` has columns instrument_id, volume (RTH only). Ties go to the
    nearer expiry, which sorts first alphabetically only within a year, so ties are broken
    by instrument_id for determinism and are practically impossible on real volumes.
    """
    named = volume_by_instrument.with_columns(
        pl.col("instrument_id").replace_strict(symbols, default=None, return_dtype=pl.Utf8).alias("symbol")
    )
    outrights = (
        named.filter(pl.col("symbol").is_not_null() & pl.col("symbol").str.contains(ES_OUTRIGHT.pattern))
        .group_by("symbol")
        .agg(pl.col("volume").sum().cast(pl.UInt64).alias("rth_volume"), pl.col("instrument_id").min())
        .filter(pl.col("rth_volume") > 0)
        .sort(["rth_volume", "instrument_id"], descending=[True, False])
    )
    total = outrights["rth_volume"].sum()
    if outrights.height == 0 or not total:
        raise NoFrontMonthError("no ES outright traded during RTH")
    dominance = outrights["rth_volume"][0] / total
    return outrights.select(
        "symbol",
        pl.col("instrument_id").cast(pl.UInt32),
        "rth_volume",
        (pl.col("rth_volume") / total).alias("share"),
        (pl.int_range(pl.len()) == 0).alias("is_front"),
        pl.lit(dominance).alias("dominance"),
        pl.lit(dominance < min_dominance).alias("roll_contaminated"),
        pl.lit(volume_source).alias("volume_source"),
    )


def front_symbol(front_month: pl.DataFrame) -> str:
    return front_month.filter("is_front")["symbol"].item()


def front_instrument_ids(front_month: pl.DataFrame) -> list[int]:
    return front_month.filter("is_front")["instrument_id"].to_list()
