"""The per-session file manifest that `raw/dbn_files` writes and every bronze asset reads."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from ..lake import Lake
from ..sources.base import SessionFiles

MANIFEST_SCHEMA: dict[str, pl.DataType] = {
    "venue": pl.Utf8,
    "schema": pl.Utf8,
    "path": pl.Utf8,
    "bytes": pl.Int64,
    "source": pl.Utf8,
}


def manifest_frame(files: SessionFiles) -> pl.DataFrame:
    rows = [
        {"venue": venue, "schema": schema, "path": str(path), "bytes": Path(path).stat().st_size, "source": files.source}
        for (venue, schema), paths in sorted(files.files.items())
        for path in paths
    ]
    return pl.DataFrame(rows, schema=MANIFEST_SCHEMA)


def session_files(lake: Lake, session: dt.date) -> SessionFiles:
    manifest = lake.read("raw", "dbn_files", session)
    grouped: dict[tuple[str, str], tuple[Path, ...]] = {}
    for row in manifest.iter_rows(named=True):
        key = (row["venue"], row["schema"])
        grouped[key] = (*grouped.get(key, ()), Path(row["path"]))
    source = manifest["source"][0] if manifest.height else "unknown"
    return SessionFiles(session=session, source=source, files=grouped)
