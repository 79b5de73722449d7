"""The embedded synthetic market as a MarketDataSource: generate a session's DBN files on demand."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from ..lib.calendar import is_trading_session
from ..synthetic import SyntheticConfig, generate_session, session_paths
from .base import OPTIONS, SessionFiles, SourceError


class SyntheticSource:
    """Sessions of the seeded ES simulator, laid out like a Databento batch download under `root`.

    `acquire` generates a session the first time it is asked for (idempotent: a session whose
    manifest records the same config is reused) and lists its files per (venue, schema)."""

    name = "synthetic"

    def __init__(self, root: Path, config: SyntheticConfig):
        self.root = Path(root)
        self.config = config

    def acquire(self, session: dt.date) -> SessionFiles:
        if not is_trading_session(session):
            raise SourceError(f"{session} is not a CME ES trading session (weekend or exchange holiday)")
        try:
            generate_session(session, self.root, self.config)
        except (OSError, ValueError) as exc:
            raise SourceError(f"synthetic session {session} could not be generated: {exc}") from exc
        files = {}
        for (venue, schema), path in session_paths(self.root, session).items():
            if venue == OPTIONS and not self.config.options:
                continue
            if not path.exists():
                raise SourceError(f"synthetic session {session}: {path} is missing after generation")
            files[(venue, schema)] = (path,)
        return SessionFiles(session=session, source=self.name, files=files)
