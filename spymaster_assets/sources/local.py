"""A directory of DBN files the user already has (`*.dbn`, `*.dbn.zst`, DBN v1–v3, any layout).

Files are found by what their DBN metadata says — dataset, schema, [start, end) and symbols —
never by file name: only the first bytes of each file are decompressed (see `dbn_header`), and
the result is cached per (path, size, mtime) so a re-scan of an unchanged directory is a stat
per file.

Venue (futures / options) comes from, in order of preference:
1. the metadata symbols: parents (`ES.FUT` vs `ES.OPT`, `E1A.OPT`), raw symbols (outrights
   like `ESU4`, spreads like `ESU4-ESZ4`, options like `ESM4 P5230`), continuous (`ES.c.0`);
2. for definition files whose symbols are inconclusive (`ALL_SYMBOLS`, instrument ids), the
   `instrument_class` of the first records;
3. a `futures` / `options` directory component below the root (the layout DatabentoSource
   writes, whose options files are requested by instrument id and so carry no symbols).
A file whose symbols span both venues is listed under both; consumers filter by instrument.

Bad files policy (corrupt files are never used, and never silently dropped):
- A file that cannot be used — not DBN, corrupt or truncated, no single schema, no end time,
  venue unknown, an exact duplicate (same dataset, schema, range and symbols) of another
  file, or a file whose Databento batch name (`glbx-mdp3-20241209.mbp-10.dbn.zst`) its
  metadata contradicts (another schema, dataset or day: an MBO file saved as MBP-10) — is
  left out of the index and reported in `source.problems`.
- Such a file is *placed* by its header's range or, when the header is unreadable or
  contradicts the name, by the day its batch name gives: the name is what claims the
  session. `acquire` returns it in `SessionFiles.unusable` for every session it covers,
  with the venue/schema it claims; raw/dbn_files then fails the session or records the tier
  it could reach (PipelineSettings.allow_tier_downgrade). A file of another dataset whose
  range covers the session is reported the same way.
- A file that cannot be placed at all (unreadable header, no batch name) might belong to any
  session: every `acquire` lists it (`placed=False`) and logs a warning naming it.
- With `strict=True`, `acquire` raises on any problem anywhere under the root.

File names are never used to *read* data: only to blame a file that cannot be read.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..lib.calendar import session_window
from .base import FUTURES, OPTIONS, SessionFiles, SourceError, UnusableFile
from .dbn_header import DbnFileError, DbnHeader, check_dbn_complete, read_dbn_header, read_first_records

DBN_SUFFIXES = (".dbn", ".dbn.zst")
DEFAULT_DATASET = "GLBX.MDP3"

PARENT_SYMBOL = re.compile(r"^[A-Z0-9]+\.(?P<kind>FUT|OPT)$")
CONTINUOUS_SYMBOL = re.compile(r"^[A-Z0-9]+\.[cnv]\.\d+$")  # e.g. ES.c.0, ES.v.1
FUTURES_OUTRIGHT = re.compile(r"^[A-Z][A-Z0-9]{0,3}[FGHJKMNQUVXZ]\d{1,2}$")  # ESU4, ESZ24, MESH5
FUTURES_SPREAD = re.compile(r"^[A-Z0-9]+-[A-Z0-9]+$")  # calendar spread ESU4-ESZ4
OPTION_RAW_SYMBOL = re.compile(r"^\S+ [CP]\d")  # ESM4 P5230, E1AN4 C5500
# Databento batch layout, one file per UTC day: <dataset>-<YYYYMMDD>.<schema>.dbn[.zst]
BATCH_NAME = re.compile(r"^(?P<dataset>[a-z0-9]+-[a-z0-9]+)-(?P<day>\d{8})\.(?P<schema>[a-z0-9-]+)\.dbn(?:\.zst)?$")
NS_PER_DAY = 86_400 * 1_000_000_000

FUTURES_INSTRUMENT_CLASSES = frozenset({"F", "S"})  # future, future spread
OPTIONS_INSTRUMENT_CLASSES = frozenset({"C", "P", "T", "M"})  # call, put, option spread, mixed spread
DEFINITION_RECORDS_TO_SAMPLE = 32


@dataclass(frozen=True)
class IndexedDbnFile:
    path: Path
    header: DbnHeader
    venues: frozenset[str]
    venue_evidence: str  # "symbols", "instrument_class" or "directory"

    @property
    def schema(self) -> str:
        return self.header.schema or ""

    def overlaps(self, start_ns: int, end_ns: int) -> bool:
        return _overlaps(self.header, start_ns, end_ns)


@dataclass(frozen=True)
class BatchName:
    """What a Databento batch file name claims: dataset, schema and the UTC day it holds."""

    dataset: str
    schema: str
    start_ns: int

    @property
    def end_ns(self) -> int:
        return self.start_ns + NS_PER_DAY

    def contradictions(self, header: DbnHeader) -> list[str]:
        found = []
        if header.dataset != self.dataset:
            found.append(f"dataset {header.dataset}")
        if header.schema != self.schema:
            found.append(f"schema {header.schema}")
        if header.end_ns is not None and not (header.start_ns < self.end_ns and header.end_ns > self.start_ns):
            found.append(f"range {_iso(header.start_ns)} – {_iso(header.end_ns)}")
        return found


def batch_name(path: Path) -> BatchName | None:
    match = BATCH_NAME.match(path.name)
    if not match:
        return None
    try:
        day = dt.datetime.strptime(match["day"], "%Y%m%d").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None
    dataset = match["dataset"].upper().replace("-", ".", 1)
    return BatchName(dataset, match["schema"], int(day.timestamp()) * 1_000_000_000)


@dataclass(frozen=True)
class DbnProblem:
    """A file left out of the index. `header` is set when the metadata was readable; `name` when the
    file is named in Databento's batch layout; `venues` when its venue could be told."""

    path: Path
    reason: str
    header: DbnHeader | None = None
    name: BatchName | None = None
    venues: frozenset[str] = frozenset()

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"

    @property
    def placed(self) -> bool:
        return self.name is not None or (self.header is not None and self.header.end_ns is not None)

    @property
    def dataset(self) -> str | None:
        return self.name.dataset if self.name is not None else (self.header.dataset if self.header else None)

    @property
    def schema(self) -> str | None:
        """The schema the file claims: its name's (what the user meant), else its header's."""
        return self.name.schema if self.name is not None else (self.header.schema if self.header else None)

    def covers(self, start_ns: int, end_ns: int) -> bool:
        """Whether the file claims data in [start, end): by its name when it has one, else by its header."""
        if self.name is not None:
            return self.name.start_ns < end_ns and self.name.end_ns > start_ns
        return self.header is not None and _overlaps(self.header, start_ns, end_ns)

    def unusable(self, placed: bool = True) -> UnusableFile:
        venue = next(iter(self.venues)) if len(self.venues) == 1 else None
        return UnusableFile(self.path, self.reason, venue, self.schema, placed)


def venues_from_symbols(symbols: Iterable[str]) -> frozenset[str]:
    """Venues the symbols name; empty when none of them is conclusive (ALL_SYMBOLS, instrument ids, ...)."""
    venues: set[str] = set()
    for symbol in symbols:
        symbol = symbol.strip()
        parent = PARENT_SYMBOL.match(symbol)
        if parent:
            venues.add(FUTURES if parent["kind"] == "FUT" else OPTIONS)
        elif OPTION_RAW_SYMBOL.match(symbol):
            venues.add(OPTIONS)
        elif FUTURES_OUTRIGHT.match(symbol) or FUTURES_SPREAD.match(symbol) or CONTINUOUS_SYMBOL.match(symbol):
            venues.add(FUTURES)
    return frozenset(venues)


def venues_from_instrument_classes(classes: Iterable[str]) -> frozenset[str]:
    venues: set[str] = set()
    for instrument_class in classes:
        if instrument_class in FUTURES_INSTRUMENT_CLASSES:
            venues.add(FUTURES)
        elif instrument_class in OPTIONS_INSTRUMENT_CLASSES:
            venues.add(OPTIONS)
    return frozenset(venues)


class LocalDbnSource:
    """Serve sessions from DBN files under `root`, matched to sessions by the time range in their headers."""

    name = "local"

    def __init__(
        self,
        root: Path,
        *,
        dataset: str = DEFAULT_DATASET,
        strict: bool = False,
        log: logging.Logger | None = None,
    ) -> None:
        self.root = Path(root)
        self.dataset = dataset
        self.strict = strict
        self._log = log or logging.getLogger(__name__)
        # path -> ((size, mtime_ns), indexed file or problem)
        self._cache: dict[Path, tuple[tuple[int, int], IndexedDbnFile | DbnProblem]] = {}
        self._problems: tuple[DbnProblem, ...] = ()

    def __repr__(self) -> str:
        return f"LocalDbnSource(root={str(self.root)!r}, dataset={self.dataset!r}, strict={self.strict})"

    @property
    def problems(self) -> tuple[DbnProblem, ...]:
        """Files left out by the most recent scan (index() or acquire()), with the reason."""
        return self._problems

    def index(self) -> tuple[IndexedDbnFile, ...]:
        """Re-scan the root (cheap for unchanged files) and return every usable file, sorted by start then path."""
        if not self.root.is_dir():
            raise SourceError(f"local DBN directory {self.root} does not exist")
        paths = _dbn_files(self.root)
        entries = [self._inspect(path) for path in paths]
        self._cache = {path: self._cache[path] for path in paths}  # forget deleted files
        usable = [e for e in entries if isinstance(e, IndexedDbnFile)]
        problems = [e for e in entries if isinstance(e, DbnProblem)]
        usable, duplicates = _split_duplicates(usable)
        self._problems = tuple(problems + duplicates)
        return tuple(sorted(usable, key=lambda f: (f.header.start_ns, str(f.path))))

    def acquire(self, session: dt.date) -> SessionFiles:
        """Every indexed file of the dataset whose [start, end) overlaps the session's [globex open, close)."""
        window = session_window(session)
        start_ns, end_ns = window.globex_open_ns, window.close_ns
        usable = self.index()
        if self.strict and self._problems:
            listing = "; ".join(map(str, self._problems))
            raise SourceError(f"{len(self._problems)} unusable DBN file(s) under {self.root}: {listing}")
        unusable = [
            p.unusable() for p in self._problems
            if p.placed and p.dataset == self.dataset and p.covers(start_ns, end_ns)
        ]
        unusable += [
            UnusableFile(f.path, f"dataset {f.header.dataset}, expected {self.dataset}", next(iter(f.venues)), f.schema)
            for f in usable
            if f.header.dataset != self.dataset and len(f.venues) == 1 and f.overlaps(start_ns, end_ns)
        ]
        unplaceable = [p for p in self._problems if not p.placed]
        if unplaceable:
            # Their time range is unknown, so they might belong to this session: say so on every acquire.
            self._log.warning(
                f"session {session}: {len(unplaceable)} DBN file(s) under {self.root} whose time range is unknown "
                "were skipped (they may hold data of this session): " + "; ".join(map(str, unplaceable))
            )
        grouped: dict[tuple[str, str], list[Path]] = defaultdict(list)
        for indexed in usable:
            if indexed.header.dataset == self.dataset and indexed.overlaps(start_ns, end_ns):
                for venue in sorted(indexed.venues):
                    grouped[(venue, indexed.schema)].append(indexed.path)
        files = {key: tuple(paths) for key, paths in grouped.items()}
        return SessionFiles(session=session, source=self.name, files=files,
                            unusable=tuple(unusable) + tuple(p.unusable(placed=False) for p in unplaceable))

    # --- internals ---------------------------------------------------------------------------

    def _inspect(self, path: Path) -> IndexedDbnFile | DbnProblem:
        stat = path.stat()
        signature = (stat.st_size, stat.st_mtime_ns)
        cached = self._cache.get(path)
        if cached and cached[0] == signature:
            return cached[1]
        entry = self._read(path)
        self._cache[path] = (signature, entry)
        return entry

    def _read(self, path: Path) -> IndexedDbnFile | DbnProblem:
        name = batch_name(path)
        try:
            header = read_dbn_header(path)
        except DbnFileError as exc:
            return DbnProblem(path, _reason(exc, path), None, name, self._directory_venues(path))
        venues, evidence = self._classify(path, header)
        if name is not None and (contradictions := name.contradictions(header)):
            return DbnProblem(
                path,
                f"named as {name.dataset} {name.schema} of {_iso(name.start_ns)[:10]} but its metadata says "
                + ", ".join(contradictions),
                header, name, venues,
            )
        try:
            check_dbn_complete(path)
        except DbnFileError as exc:
            return DbnProblem(path, _reason(exc, path), header, name, venues)
        if header.schema is None:
            return DbnProblem(path, "metadata names no single schema (mixed-schema stream)", header, name, venues)
        if header.end_ns is None:
            return DbnProblem(path, "metadata has no end time (live capture?); its session cannot be placed",
                              header, name, venues)
        if not venues:
            return DbnProblem(
                path,
                "cannot tell futures from options: symbols are inconclusive and no futures/options directory",
                header, name,
            )
        return IndexedDbnFile(path, header, venues, evidence)

    def _directory_venues(self, path: Path) -> frozenset[str]:
        parts = set(path.relative_to(self.root).parts[:-1])
        return frozenset(v for v in (FUTURES, OPTIONS) if v in parts)

    def _classify(self, path: Path, header: DbnHeader) -> tuple[frozenset[str], str]:
        candidates = [*header.symbols, *header.mappings]
        if header.stype_out != "instrument_id":  # then the mapped-to values are symbols too
            candidates += [interval.symbol for intervals in header.mappings.values() for interval in intervals]
        venues = venues_from_symbols(candidates)
        if venues:
            return venues, "symbols"
        if header.schema == "definition":
            try:
                records = read_first_records(path, DEFINITION_RECORDS_TO_SAMPLE)
            except DbnFileError:
                records = []
            classes = [_instrument_class(r) for r in records if hasattr(r, "instrument_class")]
            venues = venues_from_instrument_classes(classes)
            if venues:
                return venues, "instrument_class"
        return self._directory_venues(path), "directory"


def _dbn_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.name.endswith(DBN_SUFFIXES) and p.is_file())


def _overlaps(header: DbnHeader, start_ns: int, end_ns: int) -> bool:
    return header.end_ns is not None and header.start_ns < end_ns and header.end_ns > start_ns


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def _instrument_class(record) -> str:
    value = record.instrument_class
    return str(getattr(value, "value", value))


def _reason(exc: DbnFileError, path: Path) -> str:
    message = str(exc)
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _split_duplicates(files: list[IndexedDbnFile]) -> tuple[list[IndexedDbnFile], list[DbnProblem]]:
    """Two files with identical metadata (e.g. x.dbn next to x.dbn.zst) would double every record downstream."""
    by_content: dict[tuple, list[IndexedDbnFile]] = defaultdict(list)
    for f in files:
        h = f.header
        by_content[(h.dataset, h.schema, h.start_ns, h.end_ns, h.symbols, f.venues)].append(f)
    usable: list[IndexedDbnFile] = []
    problems: list[DbnProblem] = []
    for group in by_content.values():
        if len(group) == 1:
            usable.append(group[0])
            continue
        group = sorted(group, key=lambda f: str(f.path))
        names = ", ".join(str(f.path) for f in group)
        problems.extend(
            DbnProblem(f.path, f"duplicate data: {names} have the same dataset, schema, range and symbols", f.header)
            for f in group
        )
    return usable, problems
