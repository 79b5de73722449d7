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
