"""A compact, printable account of what the lake holds for a range of sessions."""

from __future__ import annotations

import datetime as dt

import polars as pl

from .lake import Lake
from .lib.tiers import session_tier

BRONZE_TABLES = (
    "futures_trades",
    "futures_mbp10",
    "futures_ohlcv_1m",
    "options_definitions",
    "options_trades",
    "options_mbp1",
    "options_open_interest",
)


def _rows(lake: Lake, layer: str, table: str, session: dt.date) -> int | None:
    if not lake.has_partition(layer, table, session):
        return None
    return lake.scan(layer, table, session).select(pl.len()).collect().item()


def bronze_summary(lake: Lake, sessions: list[dt.date]) -> pl.DataFrame:
    rows = []
    for session in sessions:
        row: dict[str, object] = {"session": session}
        if lake.has_partition("raw", "dbn_files", session):
            manifest = lake.read("raw", "dbn_files", session)
            row["tier"] = session_tier(set(zip(manifest["venue"], manifest["schema"])))
        if lake.has_partition("bronze", "front_month_contract", session):
            front = lake.read("bronze", "front_month_contract", session).filter("is_front")
            row |= {
                "front_month": front["symbol"].item(),
                "dominance": round(front["dominance"].item(), 3),
                "roll_contaminated": front["roll_contaminated"].item(),
            }
        for table in BRONZE_TABLES:
            row[table] = _rows(lake, "bronze", table, session)
        rows.append(row)
    return pl.DataFrame(rows)


def research_summary(lake: Lake, sessions: list[dt.date]) -> pl.DataFrame:
    """Per session: state rows, anchors, outcome mix of the primary label, episodes, indexed history."""
    rows = []
    for session in sessions:
        row: dict[str, object] = {"session": session, "state_rows": _rows(lake, "silver", "state", session)}
        if lake.has_partition("silver", "labels", session):
            labels = lake.read("silver", "labels", session, columns=["label"])["label"]
            row |= {"anchors": labels.len(), **{o: int((labels == o).sum()) for o in ("BREAK", "REJECT", "CHOP")}}
        row["episodes"] = _rows(lake, "gold", "episodes", session)
        manifest = lake.partition_dir("gold", "similarity_index", session) / "manifest.json"
        row["indexed_episodes"] = _manifest(manifest)["n_episodes"] if manifest.exists() else None
        rows.append(row)
    return pl.DataFrame(rows)


def _manifest(path) -> dict:
    import json

    return json.loads(path.read_text())
