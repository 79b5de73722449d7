"""The contract every market-data source fulfils: hand over the DBN files of one session."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# (venue, schema) pairs a session can have. Futures: ES outrights, spreads; options: ES options parents.
FUTURES = "futures"
OPTIONS = "options"
FUTURES_SCHEMAS = ("trades", "mbp-10", "ohlcv-1m", "definition")
OPTIONS_SCHEMAS = ("trades", "mbp-1", "statistics", "definition")


class SourceError(RuntimeError):
    """A source could not provide a session (missing data, bad files, refused download)."""


@dataclass(frozen=True)
class UnusableFile:
    """A file that covers the session (or may: `placed` False when its time range is unknown)
    but cannot be used, why, and the venue/schema it claims (metadata or file name) when known."""

    path: Path
    reason: str
    venue: str | None = None
    schema: str | None = None
    placed: bool = True

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class SessionFiles:
    """DBN files that cover one session's window, per (venue, schema). Missing schemas are absent keys.

    `unusable` lists files that cover the session but cannot be used (corrupt, truncated, of
    another schema or dataset than their name says): the caller decides whether the session
    fails or runs at the tier its usable files reach."""

    session: dt.date
    source: str
    files: dict[tuple[str, str], tuple[Path, ...]] = field(default_factory=dict)
    unusable: tuple[UnusableFile, ...] = ()

    def get(self, venue: str, schema: str) -> tuple[Path, ...]:
        return self.files.get((venue, schema), ())

    def has(self, venue: str, schema: str) -> bool:
        return bool(self.get(venue, schema))


class MarketDataSource(Protocol):
    name: str

    def acquire(self, session: dt.date) -> SessionFiles:
        """Make the session's DBN files available locally (generate, discover or download) and list them."""
        ...


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, streamed in 1 MiB blocks (manifests and resumable downloads record it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
