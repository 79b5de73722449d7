"""Data-quality measures behind the asset checks (pure functions over lake frames)."""

from __future__ import annotations

import polars as pl


def schema_mismatches(actual: dict[str, pl.DataType], expected: dict[str, pl.DataType]) -> list[str]:
    problems = [f"missing column {name}" for name in expected if name not in actual]
    problems += [f"unexpected column {name}" for name in actual if name not in expected]
    problems += [
        f"{name}: {actual[name]} != {dtype}" for name, dtype in expected.items() if name in actual and actual[name] != dtype
    ]
    return problems


def timestamp_regressions(frame: pl.LazyFrame) -> dict[str, int]:
    """Count records whose ts_recv goes backwards, and whose ts_event goes backwards within an instrument."""
    return (
        frame.select(
            (pl.col("ts_recv").diff() < 0).sum().alias("ts_recv_regressions"),
            (pl.col("ts_event").diff().over("instrument_id") < 0).sum().alias("ts_event_regressions"),
        )
        .collect()
        .row(0, named=True)
    )


def crossed_book_share(frame: pl.LazyFrame) -> dict[str, float]:
    """Share of book records whose best bid ≥ best ask (both sides present)."""
    both = pl.col("bid_px_00").is_not_nan() & pl.col("ask_px_00").is_not_nan()
    stats = (
        frame.select(
            pl.len().alias("rows"),
            (both & (pl.col("bid_px_00") >= pl.col("ask_px_00"))).sum().alias("crossed"),
        )
        .collect()
        .row(0, named=True)
    )
    stats["share"] = stats["crossed"] / stats["rows"] if stats["rows"] else 0.0
    return stats


# --- price sanity ----------------------------------------------------------------------------

ES_TICK = 0.25
# A float tolerance in ticks: prices are decoded from 1e-9 fixed point, so a real ES price is an
# exact multiple of 0.25 in binary; anything further than this from the grid is not a tick price.
TICK_TOLERANCE = 1e-6
# ES moves a few percent on a wild day (2020-03: −5 % limit down); ±10 % of the reference is
# far outside any real print and far inside a mis-scaled or zero price.
PRICE_BAND = 0.10


def price_sanity(
    frame: pl.LazyFrame,
    price_columns: dict[str, pl.Expr | None],
    reference: float | None,
    *,
    tick: float = ES_TICK,
    band: float = PRICE_BAND,
) -> dict[str, object]:
    """Count the prices a futures table should never hold.

    `price_columns` maps each price column to the condition under which it must hold a price
    (None: always), e.g. a book level only where its size is > 0. Problems, per column:
    - `undefined`: NaN where a price is required — Databento's UNDEF_PRICE (i64 max) decodes
      to NaN, so an undefined trade price is named here instead of surfacing as a NaN ATR;
    - `non_positive`: price ≤ 0;
    - `off_tick`: not a multiple of `tick`;
    - `outside_band`: further than `band` (a fraction) from `reference`; when `reference` is
      None the table's own median of its first price column stands in.
    Returns {"rows", "reference", "reference_source", "problems": {column: {kind: count}}, "bad_rows"}.
    """
    columns = list(price_columns)
    if reference is None:
        first = pl.col(columns[0])
        median = frame.select(first.filter(first.is_not_nan() & (first > 0)).median()).collect().item()
        reference, source = (None if median is None else float(median)), "session_median"
    else:
        source = "previous_session_close"
    def kinds(column: str) -> dict[str, pl.Expr]:
        px, needed = pl.col(column), _needed(price_columns[column])
        positive = needed & px.is_not_nan() & (px > 0)  # polars orders NaN above every number
        in_ticks = px / tick
        found = {
            "undefined": needed & px.is_nan(),
            "non_positive": needed & (px <= 0),
            "off_tick": positive & ((in_ticks - in_ticks.round()).abs() > TICK_TOLERANCE),
        }
        if reference is not None:
            found["outside_band"] = positive & ((px - reference).abs() > band * reference)
        return found

    def bad(column: str) -> pl.Expr:
        return pl.any_horizontal(list(kinds(column).values())).alias(column)

    # A real day's book is millions of rows × 21 price columns: one flag per column first, the
    # breakdown by kind only for the (rare) columns that have bad prices.
    totals = (frame.select([bad(c) for c in columns])
              .select(pl.len().alias("rows"), *(pl.col(c).sum() for c in columns),
                      pl.any_horizontal(columns).sum().alias("bad_rows"))
              .collect(engine="streaming").row(0, named=True))
    dirty = [c for c in columns if totals[c]]
    problems: dict[str, dict[str, int]] = {}
    if dirty:
        breakdown = frame.select([flag.sum().alias(f"{c}:{kind}") for c in dirty for kind, flag in kinds(c).items()])
        for name, count in breakdown.collect(engine="streaming").row(0, named=True).items():
            if count:
                column, kind = name.split(":")
                problems.setdefault(column, {})[kind] = int(count)
    return {"rows": int(totals["rows"]), "reference": reference, "reference_source": source,
            "problems": problems, "bad_rows": int(totals["bad_rows"])}


def _needed(required: pl.Expr | None) -> pl.Expr:
    return pl.lit(True) if required is None else required


def duplicate_records(frame: pl.LazyFrame, key: list[str]) -> int:
    """How many records repeat an earlier one on `key` (a double-ingested file, a doubled chunk)."""
    counts = frame.select(pl.len().alias("rows"), pl.struct(key).hash(seed=0).n_unique().alias("distinct"))
    rows, distinct = counts.collect(engine="streaming").row(0)
    return int(rows - distinct)
