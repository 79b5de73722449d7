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

On an object store (`Lake.at("s3://bucket/prefix")`, `ObjectStoreLake`) the layout is the same but
the pointer is an object: `<table>/date=D` is a small JSON naming the current version (or the
quarantine reason), written with one PUT after every file of the version is uploaded. A PUT is
atomic, so the same guarantees hold: a crash before it leaves the old version visible, readers
resolve the pointer once and then read an immutable version, the last writer wins.

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
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

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

    @staticmethod
    def at(location: str | Path, cache_dir: Path | None = None) -> Lake:
        """The lake at a local directory or at an object-store URI (`s3://bucket/prefix`, see
        `ObjectStoreLake`; `cache_dir` holds its staging and downloaded versions)."""
        if isinstance(location, str) and "://" in location:
            return ObjectStoreLake.open(location, cache_dir)
        return Lake(Path(location))

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
        return WriteResult(path=self._published_location(layer, table, session, version), rows=rows)

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
        if self._first_write_to_table(layer, table):
            self.cleanup(layer, table)
        else:
            _clean_partition(self._pointer(layer, table, session), self._versions(layer, table, session),
                             SUPERSEDED_GRACE_SECONDS, STALE_STAGING_SECONDS)

    def _first_write_to_table(self, layer: str, table: str) -> bool:
        """Whether this process writes to the table for the first time (and remember that it has)."""
        table_key = (self.table_dir(layer, table).absolute(), os.getpid())
        with _SWEPT_LOCK:
            first_write = table_key not in _SWEPT_TABLES
            _SWEPT_TABLES.add(table_key)
        return first_write

    def _pointer(self, layer: str, table: str, session: dt.date | str) -> Path:
        return self.table_dir(layer, table) / f"date={_key(session)}"

    def _published_location(self, layer: str, table: str, session: dt.date | str, version: Path) -> Path | str:
        """Where a just-published data file is reported to be (its path through the pointer)."""
        return self._pointer(layer, table, session) / _data_file(version).name

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
    path: Path | str  # a local path, or an object-store URI
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


# --- object store -------------------------------------------------------------------------------

POINTER_READERS = 16  # concurrent pointer GETs when listing a table's partitions


@dataclass(frozen=True)
class ObjectStoreSettings:
    """How to reach an S3-compatible store, from the standard AWS variables: AWS_ENDPOINT_URL (a
    MinIO/Ceph/test server; unset for AWS itself), AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY."""

    endpoint_url: str | None
    region: str
    access_key: str | None
    secret_key: str | None = field(repr=False)  # never in a repr, a log line or a test failure

    @staticmethod
    def from_env(env: dict[str, str] | None = None) -> ObjectStoreSettings:
        env = os.environ if env is None else env
        return ObjectStoreSettings(env.get("AWS_ENDPOINT_URL") or None, env.get("AWS_REGION", "us-east-1"),
                                   env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY"))

    def filesystem(self, allow_bucket_creation: bool = False):
        from pyarrow import fs as pafs

        endpoint = urlparse(self.endpoint_url) if self.endpoint_url else None
        return pafs.S3FileSystem(
            region=self.region, access_key=self.access_key, secret_key=self.secret_key,
            endpoint_override=endpoint.netloc if endpoint else None, scheme=endpoint.scheme if endpoint else "https",
            allow_bucket_creation=allow_bucket_creation)

    def polars_options(self) -> dict[str, str]:
        """The same settings for polars' own object-store reader (`storage_options`)."""
        options = {"aws_region": self.region}
        if self.endpoint_url:
            options |= {"aws_endpoint_url": self.endpoint_url,
                        "aws_allow_http": str(self.endpoint_url.startswith("http://")).lower()}
        if self.access_key:
            options |= {"aws_access_key_id": self.access_key, "aws_secret_access_key": self.secret_key or ""}
        return options


@dataclass(frozen=True)
class ObjectStoreLake(Lake):
    """The lake on an S3-compatible object store (`s3://bucket/prefix`), same layout and API.

    Under `<prefix>/<layer>/<table>/`:

        date=D                  the pointer object: JSON naming the current version and its files
                                (or a tombstone and its reason), replaced by one PUT
        .versions/D/v-<id>/...  an immutable published version (uploaded before the pointer names it)

    `root` is a local working directory: writers stage a version there (Parquet written exactly as
    for a local lake, so the bytes are identical) and `publish_dir` uploads it; `partition_dir`
    downloads a version there for readers that need files (FAISS, model files) — a version never
    changes, so a downloaded copy is valid for ever. Parquet is read straight from the store.
    Unpartitioned outputs written under `root` by other code (reports) stay on the local machine.
    """

    uri: str = ""
    settings: ObjectStoreSettings | None = None

    @staticmethod
    def open(uri: str, cache_dir: Path | None = None, settings: ObjectStoreSettings | None = None) -> ObjectStoreLake:
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"lake URI {uri!r}: only s3://bucket[/prefix] object stores are supported")
        uri = f"s3://{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
        cache = cache_dir or Path(os.environ.get("SPYMASTER_LAKE_CACHE", Path(tempfile.gettempdir()) / "spymaster-lake-cache"))
        return ObjectStoreLake(root=Path(cache) / parsed.netloc / parsed.path.strip("/"), uri=uri,
                               settings=settings or ObjectStoreSettings.from_env())

    def create_bucket(self) -> None:
        """Create the bucket if it does not exist (deployments and tests; a real lake's bucket is provisioned)."""
        self.settings.filesystem(allow_bucket_creation=True).create_dir(urlparse(self.uri).netloc, recursive=False)

    # --- the public API, on the store ---------------------------------------------------------

    def partition_dir(self, layer: str, table: str, session: dt.date | str) -> Path:
        pointer = self._read_pointer(layer, table, session)
        if pointer is None or _is_tombstone_pointer(pointer):
            return self._pointer(layer, table, session)
        return self._downloaded(layer, table, session, pointer)

    def partition_file(self, layer: str, table: str, session: dt.date | str) -> Path:
        pointer = self._read_pointer(layer, table, session)
        if pointer is None or _is_tombstone_pointer(pointer):
            return self._pointer(layer, table, session) / LEGACY_PART_FILE
        return self._downloaded(layer, table, session, pointer) / _pointer_data_file(pointer)

    def partitions(self, layer: str, table: str) -> list[str]:
        return sorted(key for key, pointer in self._pointers(layer, table).items() if not _is_tombstone_pointer(pointer))

    def has_partition(self, layer: str, table: str, session: dt.date | str) -> bool:
        pointer = self._read_pointer(layer, table, session)
        return pointer is not None and not _is_tombstone_pointer(pointer)

    def read(self, layer: str, table: str, session: dt.date | str, columns: list[str] | None = None) -> pl.DataFrame:
        return pl.read_parquet(self._readable_file(layer, table, session), columns=columns,
                               storage_options=self.settings.polars_options())

    def scan(self, layer: str, table: str, session: dt.date | str) -> pl.LazyFrame:
        return pl.scan_parquet(self._readable_file(layer, table, session), storage_options=self.settings.polars_options())

    def file_metadata(self, layer: str, table: str, session: dt.date | str) -> dict[str, str]:
        path = self._readable_file(layer, table, session).removeprefix("s3://")
        meta = pq.read_schema(path, filesystem=self._fs()).metadata or {}
        return {k.decode(): v.decode() for k, v in meta.items() if not k.startswith(b"ARROW")}

    def quarantine_reason(self, layer: str, table: str, session: dt.date | str) -> str | None:
        pointer = self._read_pointer(layer, table, session)
        return pointer["reason"] if pointer is not None and _is_tombstone_pointer(pointer) else None

    def quarantined(self, layer: str, table: str) -> dict[str, str]:
        return {key: pointer["reason"] for key, pointer in sorted(self._pointers(layer, table).items())
                if _is_tombstone_pointer(pointer)}

    def cleanup(self, layer: str | None = None, table: str | None = None, *,
                grace_seconds: float = SUPERSEDED_GRACE_SECONDS,
                stale_seconds: float = STALE_STAGING_SECONDS) -> list[Path]:
        """Remove, on the store, versions no pointer names: once the partition's last swap is older
        than `grace_seconds` (every superseded version was superseded at or before it) and the
        version's newest file is older than `stale_seconds` (an upload whose pointer is not written
        yet looks the same). Local staging of dead writers goes as for a local lake. Returns the
        removed versions as `<table>/.versions/D/<version>` paths under `root`."""
        from pyarrow import fs as pafs

        # Locally: staging of dead writers, and downloaded copies older than the grace period
        # (a reader that needs one again downloads it again).
        removed = super().cleanup(layer, table, grace_seconds=grace_seconds, stale_seconds=stale_seconds)
        now = time.time()
        for table_key in self._table_keys(layer, table):
            layer_, table_ = table_key.rsplit("/", 2)[-2:]
            infos = self._fs().get_file_info(pafs.FileSelector(f"{table_key}/{VERSIONS_DIR}", recursive=True, allow_not_found=True))
            newest: dict[tuple[str, str], float] = {}
            for info in infos:
                parts = info.path.removeprefix(f"{table_key}/{VERSIONS_DIR}/").split("/")
                if info.type == pafs.FileType.File and len(parts) >= 3:
                    key = (parts[0], parts[1])
                    newest[key] = max(newest.get(key, 0.0), info.mtime.timestamp())
            pointers = {day: self._read_pointer_with_time(layer_, table_, day) for day, _ in newest}
            for (day, version), written_at in sorted(newest.items()):
                pointer, swapped_at = pointers[day]
                if pointer is not None and version == pointer["version"]:
                    continue
                superseded_long_ago = pointer is None or now - swapped_at > grace_seconds
                if superseded_long_ago and now - written_at > stale_seconds:
                    self._fs().delete_dir(f"{table_key}/{VERSIONS_DIR}/{day}/{version}")
                    removed.append(self.table_dir(layer_, table_) / VERSIONS_DIR / day / version)
        return removed

    # --- internals ----------------------------------------------------------------------------

    def _tidy_before_write(self, layer: str, table: str, session: dt.date | str) -> None:
        """A process's first write to a table sweeps the table on the store (one listing); later
        writes leave it to `cleanup`, as listing the store per write would cost a request each."""
        if self._first_write_to_table(layer, table):
            self.cleanup(layer, table)

    def _published_location(self, layer: str, table: str, session: dt.date | str, version: Path) -> str:
        return self._uri(layer, table, VERSIONS_DIR, _key(session), version.name, _data_file(version).name)

    def _readable_file(self, layer: str, table: str, session: dt.date | str) -> str:
        pointer = self._read_pointer(layer, table, session)
        if pointer is not None and _is_tombstone_pointer(pointer):
            reason = pointer["reason"]
            raise QuarantinedPartition(f"{layer}/{table} partition {_key(session)} is quarantined: {reason}", reason)
        if pointer is None:
            raise FileNotFoundError(f"{layer}/{table} has no partition {_key(session)} ({self._uri(layer, table, f'date={_key(session)}')})")
        return self._uri(layer, table, VERSIONS_DIR, _key(session), pointer["version"], _pointer_data_file(pointer))

    def _publish(self, staging: Path, layer: str, table: str, session: dt.date | str, prefix: str) -> Path:
        versions = self._versions(layer, table, session)
        if staging.parent != versions or not staging.name.startswith(STAGING_PREFIX):
            raise ValueError(f"{staging} is not a staging directory of {layer}/{table} {_key(session)}")
        version = f"{prefix}{_staging_id(staging)}"
        version_key = self._object_key(layer, table, VERSIONS_DIR, _key(session), version)
        files = sorted(path.relative_to(staging).as_posix() for path in staging.rglob("*") if path.is_file())
        pointer: dict[str, object] = {"version": version, "files": files,
                                      "published_at": dt.datetime.now(dt.UTC).isoformat()}
        if prefix == TOMBSTONE_PREFIX:
            pointer["reason"] = json.loads((staging / QUARANTINE_FILE).read_text())["reason"]
        uploaded = False
        try:
            for name in files:
                self._put(f"{version_key}/{name}", (staging / name).read_bytes())
            uploaded = True
            _crash_point("before_swap")
            self._put(self._object_key(layer, table, f"date={_key(session)}"),
                      json.dumps(pointer, sort_keys=True).encode())  # the one PUT that publishes
            _crash_point("after_swap")
        except BaseException:
            current = self._read_pointer(layer, table, session) if uploaded else None
            if current is None or current["version"] != version:
                with contextlib.suppress(OSError):
                    self._fs().delete_dir(version_key)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return versions / version

    def _downloaded(self, layer: str, table: str, session: dt.date | str, pointer: dict) -> Path:
        """The version's files in the local cache, downloaded once (into staging, then renamed)."""
        local = self._versions(layer, table, session) / pointer["version"]
        if local.is_dir():
            return local
        local.parent.mkdir(parents=True, exist_ok=True)
        scratch = local.parent / f"{DOOMED_PREFIX}download-{uuid.uuid4().hex}"
        try:
            version_key = self._object_key(layer, table, VERSIONS_DIR, _key(session), pointer["version"])
            for name in pointer["files"]:
                (scratch / name).parent.mkdir(parents=True, exist_ok=True)
                with self._fs().open_input_stream(f"{version_key}/{name}") as source:
                    (scratch / name).write_bytes(source.read())
            with contextlib.suppress(OSError):  # another reader of this version renamed its copy first
                scratch.rename(local)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return local

    def _read_pointer(self, layer: str, table: str, session: dt.date | str) -> dict | None:
        try:
            with self._fs().open_input_stream(self._object_key(layer, table, f"date={_key(session)}")) as stream:
                return json.loads(stream.read())
        except FileNotFoundError:
            return None

    def _read_pointer_with_time(self, layer: str, table: str, session: str) -> tuple[dict | None, float]:
        from pyarrow import fs as pafs

        info = self._fs().get_file_info(self._object_key(layer, table, f"date={session}"))
        if info.type != pafs.FileType.File:
            return None, 0.0
        return self._read_pointer(layer, table, session), info.mtime.timestamp()

    def _pointers(self, layer: str, table: str) -> dict[str, dict]:
        """Session → pointer of every partition of the table (one listing, then the pointers in parallel)."""
        from pyarrow import fs as pafs

        infos = self._fs().get_file_info(pafs.FileSelector(self._object_key(layer, table), allow_not_found=True))
        sessions = [info.base_name.removeprefix("date=") for info in infos
                    if info.type == pafs.FileType.File and info.base_name.startswith("date=")]
        with ThreadPoolExecutor(POINTER_READERS) as pool:
            pointers = pool.map(lambda day: self._read_pointer(layer, table, day), sessions)
        return {day: pointer for day, pointer in zip(sessions, pointers, strict=True) if pointer is not None}

    def _table_keys(self, layer: str | None, table: str | None) -> list[str]:
        from pyarrow import fs as pafs

        def children(key: str) -> list[str]:
            infos = self._fs().get_file_info(pafs.FileSelector(key, allow_not_found=True))
            return [info.path for info in infos if info.type == pafs.FileType.Directory]

        layers = [self._object_key(layer)] if layer else children(self._bucket_key())
        return [key for layer_key in layers
                for key in ([f"{layer_key}/{table}"] if table else children(layer_key))]

    def _put(self, key: str, payload: bytes) -> None:
        """One PUT of a whole object: visible complete or not at all."""
        with self._fs().open_output_stream(key, metadata={}) as stream:
            stream.write(payload)

    def _bucket_key(self) -> str:
        return self.uri.removeprefix("s3://")

    def _object_key(self, *parts: str) -> str:
        return "/".join([self._bucket_key(), *parts])

    def _uri(self, *parts: str) -> str:
        return "s3://" + self._object_key(*parts)

    def _fs(self):
        return _filesystem(self.settings)


_FILESYSTEMS: dict[tuple[ObjectStoreSettings, int], object] = {}


def _filesystem(settings: ObjectStoreSettings):
    """One S3 client per settings and process (a forked worker makes its own: AWS SDK state does not survive fork)."""
    key = (settings, os.getpid())
    if key not in _FILESYSTEMS:
        _FILESYSTEMS[key] = settings.filesystem()
    return _FILESYSTEMS[key]


def _is_tombstone_pointer(pointer: dict) -> bool:
    return pointer["version"].startswith(TOMBSTONE_PREFIX)


def _pointer_data_file(pointer: dict) -> str:
    return _data_file_name(pointer["version"].removeprefix(VERSION_PREFIX))
