"""The Parquet lake: Hive-partitioned tables `<root>/<layer>/<table>/date=YYYY-MM-DD/`.

One partition, under its table directory:

    date=D                      symlink -> .versions/D/<current>: the pointer every reader resolves
    .versions/D/v-<id>/         an immutable published version: part-<id>.parquet, or FAISS files
    .versions/D/q-<id>/         a quarantine tombstone: QUARANTINED.json and no data
    .versions/D/.tmp-<writer>/  a writer's staging directory (pid, process start, host in the name)
    .versions/D/.lock           flock that serializes pointer swaps and cleanup of this partition

A writer fills its own staging directory, renames it to a fresh version and swaps the pointer
with one `os.replace` of a symlink. So readers see the old version or the new one, never none and
never half; a crash at any step leaves the old or the new version; concurrent writers each
publish a complete version and the last swap wins. This class resolves the pointer once per read
and then reads the immutable version. Globs (`date=*/part-*.parquet`: DuckDB views, dbt sources,
notebooks) follow the symlink to exactly the current versions; the data file is named after its
version because DuckDB reads a file's footer and later reopens it by path — a query racing a swap
then fails with "no such file" instead of mixing one version's footer with another's pages.

A superseded version stays for a grace period (a reader may have resolved it just before the
swap); staging directories of dead writers and expired versions are removed by `cleanup`, which
writes also run (see `_tidy_before_write`). Writer settings are fixed so that re-running a
partition on the same input gives byte-identical files.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import fcntl
import json
import os
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from .lib.jsonable import jsonable
from .lib.prefetch import prefetched

PART_GLOB = "part-*.parquet"  # the data file of a partition, as globs over the lake match it
LEGACY_PART_FILE = "part-0.parquet"  # its name before partitions were versioned
ZSTD_LEVEL = 3
ROW_GROUP_ROWS = 1_000_000

VERSIONS_DIR = ".versions"
LOCK_FILE = ".lock"
QUARANTINE_FILE = "QUARANTINED.json"
VERSION_PREFIX, TOMBSTONE_PREFIX = "v-", "q-"
STAGING_PREFIX, DOOMED_PREFIX, LINK_PREFIX = ".tmp-", ".del-", ".link-"
# A reader resolves the pointer once per read/scan (a LazyFrame from `scan` keeps that version's
# path until it is collected); a superseded version is kept this long after the swap so such a
# reader never loses its file. Generous: an MBP-10 session scan can take many minutes.
SUPERSEDED_GRACE_SECONDS = 3600.0
# Staging whose writer cannot be checked (written on another host, or by the pre-versioning
# layout) is removed only when nothing has touched it for this long.
STALE_STAGING_SECONDS = 6 * 3600.0
# Fault injection for the crash tests: the writer SIGKILLs itself at the named step.
CRASH_AT_ENV = "SPYMASTER_LAKE_CRASH_AT"
HOST = socket.gethostname()
# Tables this process has swept once (keyed with the pid: a forked child sweeps again).
_SWEPT_TABLES: set[tuple[Path, int]] = set()
_SWEPT_LOCK = threading.Lock()


@dataclass(frozen=True)
class ParquetOptions:
    """How `write_frames` encodes a table. The defaults suit any table; a table of raw records
    (tens of millions of rows a session, never null, read by time range) is written about half
    as costly with zstd level 1, statistics on its time columns only, and REQUIRED columns
    (no definition levels to compute and store). A null in a `not_null` table fails the write."""

    zstd_level: int = ZSTD_LEVEL
    statistics: tuple[str, ...] | None = None  # the columns with min/max statistics; None: all
    not_null: bool = False


class QuarantinedPartition(FileNotFoundError):
    """A partition marked unreadable (`Lake.quarantine`) until a new version is published."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Lake:
    root: Path

    def table_dir(self, layer: str, table: str) -> Path:
        return self.root / layer / table

    def partition_dir(self, layer: str, table: str, session: dt.date | str) -> Path:
        """The current version's directory, resolved once — a caller reading several files from it
        reads one version even while a writer replaces the partition. For an absent or quarantined
        partition, the nominal `date=D` path (which holds no data files)."""
        pointer = self._pointer(layer, table, session)
        current = _target(pointer)
        return current if current is not None and not _is_tombstone(current) else pointer

    def partition_file(self, layer: str, table: str, session: dt.date | str) -> Path:
        """The current version's data file (a path that stays valid while that version lives)."""
        pointer = self._pointer(layer, table, session)
        current = _target(pointer)
        return _data_file(current) if current is not None and not _is_tombstone(current) else pointer / LEGACY_PART_FILE

    def partitions(self, layer: str, table: str) -> list[str]:
        """Session keys (YYYY-MM-DD) of the table's readable partitions (quarantined ones left out), oldest first."""
        return sorted(pointer.name.removeprefix("date=") for pointer in self.table_dir(layer, table).glob("date=*")
                      if _readable(_target(pointer)))

    def has_partition(self, layer: str, table: str, session: dt.date | str) -> bool:
        return _readable(_target(self._pointer(layer, table, session)))

    def write_frames(
        self,
        layer: str,
        table: str,
        session: dt.date | str,
        frames: Iterable[pl.DataFrame],
        schema: dict[str, pl.DataType],
        metadata: dict[str, str] | None = None,
        options: ParquetOptions = ParquetOptions(),
    ) -> WriteResult:
        """Stream `frames` into one Parquet file and atomically publish it as the partition's new version.

        Every frame is cast to `schema` (so an empty day still has typed columns) and becomes
        one row group (up to ROW_GROUP_ROWS); `metadata` is stored as Parquet key-value metadata (schema_version,
        config hash). Publishing clears a quarantine of the partition.
        """
        staging = self.staging_dir(layer, table, session)
        rows = 0
        try:
            arrow_schema = pl.DataFrame(schema=schema).to_arrow().schema
            if options.not_null:
                arrow_schema = pa.schema([field.with_nullable(False) for field in arrow_schema])
            if metadata:
                arrow_schema = arrow_schema.with_metadata({k: str(v) for k, v in sorted(metadata.items())})
            with pq.ParquetWriter(
                staging / _data_file_name(_staging_id(staging)),
                arrow_schema,
                compression="zstd",
                compression_level=options.zstd_level,
                # Dictionary pages pay off for codes and symbols; on 60 price/size columns of a
                # book they cost more write time than they save bytes after zstd.
                use_dictionary=[name for name, dtype in schema.items() if dtype in (pl.Utf8, pl.Boolean)] or False,
                write_statistics=True if options.statistics is None else [c for c in options.statistics if c in schema],
            ) as writer:
                for frame in prefetched(frames, name="lake-frames"):
                    if frame.height == 0:
                        continue
                    table_ = frame.select(list(schema)).cast(schema).to_arrow()
                    writer.write_table(table_.cast(arrow_schema), row_group_size=ROW_GROUP_ROWS)
                    rows += frame.height
            version = self.publish_dir(staging, layer, table, session)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already when published
        return WriteResult(path=self._pointer(layer, table, session) / _data_file(version).name, rows=rows)

    def write_frame(self, layer, table, session, frame: pl.DataFrame, metadata=None) -> WriteResult:
        return self.write_frames(layer, table, session, [frame], dict(frame.schema), metadata)

    def staging_dir(self, layer: str, table: str, session: dt.date | str) -> Path:
        """A fresh private directory for the partition's next version (any files, e.g. FAISS
        indices); `publish_dir` makes it current atomically. Cleans leftovers first (`_tidy_before_write`)."""
        self._tidy_before_write(layer, table, session)
        versions = self._versions(layer, table, session)
        versions.mkdir(parents=True, exist_ok=True)
        version_id = f"{time.time_ns():020d}_{uuid.uuid4().hex[:8]}"
        staging = versions / f"{STAGING_PREFIX}{os.getpid()}-{_process_start(os.getpid())}-{version_id}-{HOST}"
        staging.mkdir()
        return staging

    @staticmethod
    def staged_data_file(staging: Path) -> Path:
        """Where a staged version keeps its Parquet table, so that `read`/`scan` and the DuckDB
        views find it once `publish_dir` has made the version current."""
        return staging / _data_file_name(_staging_id(staging))

    def publish_dir(self, staging: Path, layer: str, table: str, session: dt.date | str) -> Path:
        """Make `staging` (from `staging_dir` of this partition) the current version; returns its directory."""
        return self._publish(staging, layer, table, session, VERSION_PREFIX)

    def read(self, layer: str, table: str, session: dt.date | str, columns: list[str] | None = None) -> pl.DataFrame:
        return pl.read_parquet(self._readable_file(layer, table, session), columns=columns)

    def scan(self, layer: str, table: str, session: dt.date | str) -> pl.LazyFrame:
        # The resolved version's file: the LazyFrame keeps reading that version after a replace.
        return pl.scan_parquet(self._readable_file(layer, table, session))

    def file_metadata(self, layer: str, table: str, session: dt.date | str) -> dict[str, str]:
        meta = pq.read_schema(self._readable_file(layer, table, session)).metadata or {}
        return {k.decode(): v.decode() for k, v in meta.items() if not k.startswith(b"ARROW")}

    # --- quarantine -------------------------------------------------------------------------

    def quarantine(self, layer: str, table: str, session: dt.date | str, reason: str) -> None:
        """Mark the partition unreadable until a new version of it is published.

        The pointer is swapped to a tombstone version that holds only the reason, so the mark is
        atomic and survives crashes, works whether or not the partition exists, hides the data
        from DuckDB/dbt globs too, and is cleared by the very swap that publishes a rebuild.
        """
        if not reason.strip():
            raise ValueError("a quarantine needs a reason")
        staging = self.staging_dir(layer, table, session)
        try:
            record = {"layer": layer, "table": table, "session": _key(session), "reason": reason,
                      "quarantined_at": dt.datetime.now(dt.UTC).isoformat()}
            (staging / QUARANTINE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
            self._publish(staging, layer, table, session, TOMBSTONE_PREFIX)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def quarantine_reason(self, layer: str, table: str, session: dt.date | str) -> str | None:
        current = _target(self._pointer(layer, table, session))
        return _tombstone_reason(current) if current is not None and _is_tombstone(current) else None

    def quarantined(self, layer: str, table: str) -> dict[str, str]:
        """Session → reason for every quarantined partition of the table."""
        found = {pointer.name.removeprefix("date="): _target(pointer) for pointer in self.table_dir(layer, table).glob("date=*")}
        return {key: _tombstone_reason(current) for key, current in sorted(found.items())
                if current is not None and _is_tombstone(current)}

    # --- cleanup ----------------------------------------------------------------------------

    def cleanup(self, layer: str | None = None, table: str | None = None, *,
                grace_seconds: float = SUPERSEDED_GRACE_SECONDS,
                stale_seconds: float = STALE_STAGING_SECONDS) -> list[Path]:
        """Remove what no reader or live writer can still need, in one table or the whole lake:
        staging of dead writers (or untouched for `stale_seconds` when the writer cannot be
        checked), versions superseded more than `grace_seconds` ago, and the pre-versioning
        layout's `.tmp-`/`.trash-` leftovers. Returns the removed paths."""
        pattern = f"{layer or '*'}/{table or '*'}"
        removed: list[Path] = []
        for table_dir in sorted(p for p in self.root.glob(pattern) if p.is_dir() and not p.is_symlink()):
            removed += _clean_legacy_leftovers(table_dir, stale_seconds)
            versions_root = table_dir / VERSIONS_DIR
            if versions_root.is_dir():
                for versions in sorted(versions_root.iterdir()):
                    removed += _clean_partition(table_dir / f"date={versions.name}", versions, grace_seconds, stale_seconds)
        return removed

    # --- internals --------------------------------------------------------------------------

    def _tidy_before_write(self, layer: str, table: str, session: dt.date | str) -> None:
        """Every write cleans its own partition; a process's first write to a table sweeps the whole
        table (leftovers of writers that died before this process started). Sweeping on every write
        would cost a directory listing per partition of the table, each time."""
        table_key = (self.table_dir(layer, table).absolute(), os.getpid())
        with _SWEPT_LOCK:
            first_write = table_key not in _SWEPT_TABLES
            _SWEPT_TABLES.add(table_key)
        if first_write:
            self.cleanup(layer, table)
        else:
            _clean_partition(self._pointer(layer, table, session), self._versions(layer, table, session),
                             SUPERSEDED_GRACE_SECONDS, STALE_STAGING_SECONDS)

    def _pointer(self, layer: str, table: str, session: dt.date | str) -> Path:
        return self.table_dir(layer, table) / f"date={_key(session)}"

    def _versions(self, layer: str, table: str, session: dt.date | str) -> Path:
        return self.table_dir(layer, table) / VERSIONS_DIR / _key(session)

    def _readable_file(self, layer: str, table: str, session: dt.date | str) -> Path:
        pointer = self._pointer(layer, table, session)
        current = _target(pointer)
        if current is not None and _is_tombstone(current):
            reason = _tombstone_reason(current)
            raise QuarantinedPartition(f"{layer}/{table} partition {_key(session)} is quarantined: {reason}", reason)
        if current is None or not _data_file(current).exists():
            raise FileNotFoundError(f"{layer}/{table} has no partition {_key(session)} ({pointer})")
        return _data_file(current)

    def _publish(self, staging: Path, layer: str, table: str, session: dt.date | str, prefix: str) -> Path:
        versions = self._versions(layer, table, session)
        if staging.parent != versions or not staging.name.startswith(STAGING_PREFIX):
            raise ValueError(f"{staging} is not a staging directory of {layer}/{table} {_key(session)}")
        pointer = self._pointer(layer, table, session)
        version = versions / f"{prefix}{_staging_id(staging)}"
        try:
            _fsync_tree(staging)
            with _partition_lock(versions):
                staging.rename(version)
                _fsync_dir(versions)
                _crash_point("before_swap")
                _swap_pointer(pointer, version)
                _crash_point("after_swap")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if _target(pointer) != version:
                shutil.rmtree(version, ignore_errors=True)
            raise
        return version


@dataclass(frozen=True)
class WriteResult:
    path: Path
    rows: int


def _key(session: dt.date | str) -> str:
    return session.isoformat() if isinstance(session, dt.date) else str(session)


def _target(pointer: Path) -> Path | None:
    """Where the partition pointer leads, read once: a version or tombstone directory, the
    pointer itself when it is a directory of the pre-versioning layout, or None (absent)."""
    try:
        return pointer.parent / os.readlink(pointer)
    except FileNotFoundError:
        return None
    except OSError:  # not a symlink
        return pointer if pointer.is_dir() else None


def _data_file_name(version_id: str) -> str:
    return f"part-{version_id}.parquet"


def _data_file(current: Path) -> Path:
    """The Parquet file of a version, or of a partition that is a plain directory (the
    pre-versioning layout, or a lake copied without preserving symlinks)."""
    if current.name.startswith(VERSION_PREFIX):
        return current / _data_file_name(current.name.removeprefix(VERSION_PREFIX))
    return next(iter(sorted(current.glob(PART_GLOB))), current / LEGACY_PART_FILE)


def _staging_id(staging: Path) -> str:
    """The version id a staging directory will be published under (chosen when it is made)."""
    return staging.name.removeprefix(STAGING_PREFIX).split("-", 3)[2]


def _is_tombstone(current: Path) -> bool:
    if current.name.startswith(TOMBSTONE_PREFIX):
        return True
    return not current.name.startswith(VERSION_PREFIX) and (current / QUARANTINE_FILE).exists()  # a copied tombstone


def _readable(current: Path | None) -> bool:
    return current is not None and not _is_tombstone(current) and current.is_dir()


def _tombstone_reason(tombstone: Path) -> str:
    try:
        return json.loads((tombstone / QUARANTINE_FILE).read_text())["reason"]
    except FileNotFoundError:  # superseded and cleaned up after this reader resolved it
        return "quarantined (record since replaced)"


def _swap_pointer(pointer: Path, version: Path) -> None:
    """Point `pointer` at `version` in one atomic rename (caller holds the partition lock)."""
    previous = _target(pointer)
    if previous is not None:
        with contextlib.suppress(FileNotFoundError):
            os.utime(previous)  # its grace period (cleanup reads the mtime) starts at the swap
    link = pointer.parent / f"{LINK_PREFIX}{pointer.name}-{uuid.uuid4().hex}"
    os.symlink(os.path.relpath(version, pointer.parent), link)
    try:
        if previous == pointer:
            # A directory of the pre-versioning layout: a symlink cannot be renamed over it, so the
            # two are exchanged atomically and the old directory is kept as a superseded version.
            _exchange(link, pointer)
            retired = version.parent / f"{VERSION_PREFIX}{time.time_ns():020d}_legacy"
            link.rename(retired)
            os.utime(retired)
        else:
            os.replace(link, pointer)
    finally:
        if link.is_symlink():
            link.unlink()
    _fsync_dir(pointer.parent)


def _exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); elsewhere three renames."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    at_fdcwd, rename_exchange = -100, 2
    if renameat2 is not None and renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return
    aside = a.parent / f"{DOOMED_PREFIX}exchange-{uuid.uuid4().hex}"
    b.rename(aside)
    a.rename(b)
    aside.rename(a)


@contextlib.contextmanager
def _partition_lock(versions: Path) -> Iterator[None]:
    """Exclusive per-partition lock; the kernel releases it when its holder dies."""
    versions.mkdir(parents=True, exist_ok=True)
    fd = os.open(versions / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush a staged version to disk before it is published, so a power cut after the swap
    cannot leave the pointer on empty files."""
    for directory, _, files in os.walk(root):
        for name in files:
            _fsync_path(os.path.join(directory, name))
        _fsync_path(directory)


def _fsync_dir(directory: Path) -> None:
    _fsync_path(directory)


def _fsync_path(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _crash_point(step: str) -> None:
    """Die here, as kill -9 or a power cut would, when the crash tests ask for it."""
    if os.environ.get(CRASH_AT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


_PROC = Path("/proc/self/stat").exists()


def _process_start(pid: int) -> str:
    """The process's start time (clock ticks since boot), so a recycled pid is not taken for the writer."""
    if not _PROC:
        return "0"
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def _process_alive(pid: int, start: str) -> bool:
    if not _PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z" and fields[19] == start


def _age(path: Path, now: float) -> float:
    try:
        return now - path.lstat().st_mtime
    except FileNotFoundError:
        return -1.0


def _writer_alive(staging: Path, now: float, stale_seconds: float) -> bool:
    """Whether a staging directory may still belong to a running writer."""
    try:
        pid, start, _token, host = staging.name.removeprefix(STAGING_PREFIX).split("-", 3)
        if host == HOST:
            return _process_alive(int(pid), start)
    except ValueError:
        pass
    return _age(staging, now) <= stale_seconds  # another host's writer: only its age tells


def _clean_partition(pointer: Path, versions: Path, grace_seconds: float, stale_seconds: float) -> list[Path]:
    try:
        names = os.listdir(versions)
    except (FileNotFoundError, NotADirectoryError):
        return []
    current = _target(pointer)
    if all(name == LOCK_FILE or (current is not None and versions / name == current) for name in names):
        return []  # the common case, decided without taking the lock
    now, doomed = time.time(), []
    with _partition_lock(versions):
        current = _target(pointer)  # again, under the lock: no swap can happen now
        for name in os.listdir(versions):
            path = versions / name
            if name == LOCK_FILE or path == current:
                continue
            if name.startswith(STAGING_PREFIX):
                drop = not _writer_alive(path, now, stale_seconds)
            elif name.startswith((VERSION_PREFIX, TOMBSTONE_PREFIX)):
                drop = _age(path, now) > grace_seconds
            else:
                drop = name.startswith(DOOMED_PREFIX)  # a cleanup that died while deleting
            if not drop:
                continue
            if name.startswith(DOOMED_PREFIX):
                doomed.append((path, path))
            else:
                # Renamed away under the lock; the slow delete happens after releasing it.
                doomed.append((path, path.rename(versions / f"{DOOMED_PREFIX}{uuid.uuid4().hex}")))
    for original, path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return [original for original, _ in doomed]


def _clean_legacy_leftovers(table_dir: Path, stale_seconds: float) -> list[Path]:
    """Litter in the table directory itself: symlinks of a publisher that died before its swap,
    and the pre-versioning layout's staging (`.tmp-date=D-<hex>`) and half-done replaces
    (`.trash-date=D-<hex>`, which holds the only copy when the partition is missing)."""
    removed, now = [], time.time()
    with os.scandir(table_dir) as entries:
        hidden = [Path(entry.path) for entry in entries if entry.name.startswith(".") and entry.name != VERSIONS_DIR]
    for path in hidden:
        kind, _, rest = path.name[1:].partition("-")
        session = rest[len("date="):len("date=YYYY-MM-DD")] if rest.startswith("date=") else None
        if session is None:
            continue
        pointer = table_dir / f"date={session}"
        if kind == LINK_PREFIX[1:-1]:
            with _partition_lock(table_dir / VERSIONS_DIR / session):  # its publisher held this lock
                if path.is_symlink():
                    path.unlink()
                    removed.append(path)
        elif kind == "tmp" and path.is_dir() and _age(path, now) > stale_seconds:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        elif kind == "trash" and path.is_dir():
            with _partition_lock(table_dir / VERSIONS_DIR / session):
                if _target(pointer) is None:
                    path.rename(pointer)  # the replace died between its renames: restore the old partition
                    continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def write_json_atomic(path: Path, payload: object) -> Path:
    """JSON written to a temp file and renamed over `path` (readers never see half a report)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex}"
    tmp.write_text(json.dumps(jsonable(payload), indent=2, sort_keys=True, default=str, allow_nan=False))
    tmp.replace(path)
    return path


def arrow_schema_of(schema: dict[str, pl.DataType]) -> pa.Schema:
    return pl.DataFrame(schema=schema).to_arrow().schema
