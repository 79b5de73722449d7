"""The Parquet lake: Hive-partitioned tables `<root>/<layer>/<table>/date=YYYY-MM-DD/`.

A partition is written into a hidden temp directory beside its final place and renamed
into position only when complete, so a failed run leaves the previous partition (or
nothing) — never half a partition. Writer settings are fixed so that re-running a
partition on the same input gives byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import shutil
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from .lib.jsonable import jsonable

PART_FILE = "part-0.parquet"
ZSTD_LEVEL = 3
ROW_GROUP_ROWS = 1_000_000


@dataclass(frozen=True)
class Lake:
    root: Path

    def table_dir(self, layer: str, table: str) -> Path:
        return self.root / layer / table

    def partition_dir(self, layer: str, table: str, session: dt.date | str) -> Path:
        return self.table_dir(layer, table) / f"date={_key(session)}"

    def partition_file(self, layer: str, table: str, session: dt.date | str) -> Path:
        return self.partition_dir(layer, table, session) / PART_FILE

    def partitions(self, layer: str, table: str) -> list[str]:
        """Session keys (YYYY-MM-DD) of the table's published partitions, oldest first."""
        return sorted(p.name.removeprefix("date=") for p in self.table_dir(layer, table).glob("date=*"))

    def has_partition(self, layer: str, table: str, session: dt.date | str) -> bool:
        return self.partition_file(layer, table, session).exists()

    def write_frames(
        self,
        layer: str,
        table: str,
        session: dt.date | str,
        frames: Iterable[pl.DataFrame],
        schema: dict[str, pl.DataType],
        metadata: dict[str, str] | None = None,
    ) -> WriteResult:
        """Stream `frames` into one Parquet file and atomically publish it as the partition.

        Every frame is cast to `schema` (so an empty day still has typed columns);
        `metadata` is stored as Parquet key-value metadata (schema_version, config hash).
        """
        final_dir = self.partition_dir(layer, table, session)
        tmp_dir = self.staging_dir(layer, table, session)
        rows = 0
        try:
            arrow_schema = pl.DataFrame(schema=schema).to_arrow().schema
            if metadata:
                arrow_schema = arrow_schema.with_metadata({k: str(v) for k, v in sorted(metadata.items())})
            with pq.ParquetWriter(
                tmp_dir / PART_FILE,
                arrow_schema,
                compression="zstd",
                compression_level=ZSTD_LEVEL,
                # Dictionary pages pay off for codes and symbols; on 60 price/size columns of a
                # book they cost more write time than they save bytes after zstd.
                use_dictionary=[name for name, dtype in schema.items() if dtype in (pl.Utf8, pl.Boolean)] or False,
                write_statistics=True,
            ) as writer:
                for frame in prefetched(frames):
                    if frame.height == 0:
                        continue
                    table_ = frame.select(list(schema)).cast(schema).to_arrow()
                    writer.write_table(table_.cast(arrow_schema), row_group_size=ROW_GROUP_ROWS)
                    rows += frame.height
            _publish(tmp_dir, final_dir)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        return WriteResult(path=final_dir / PART_FILE, rows=rows)

    def write_frame(self, layer, table, session, frame: pl.DataFrame, metadata=None) -> WriteResult:
        return self.write_frames(layer, table, session, [frame], dict(frame.schema), metadata)

    def staging_dir(self, layer: str, table: str, session: dt.date | str) -> Path:
        """A fresh hidden directory beside the partition, for artifacts that are not one Parquet
        file (e.g. FAISS indices); `publish_dir` swaps it in atomically."""
        final_dir = self.partition_dir(layer, table, session)
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = final_dir.parent / f".tmp-{final_dir.name}-{uuid.uuid4().hex}"
        staging.mkdir()
        return staging

    def publish_dir(self, staging: Path, layer: str, table: str, session: dt.date | str) -> Path:
        final_dir = self.partition_dir(layer, table, session)
        try:
            _publish(staging, final_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final_dir

    def read(self, layer: str, table: str, session: dt.date | str, columns: list[str] | None = None) -> pl.DataFrame:
        path = self.partition_file(layer, table, session)
        if not path.exists():
            raise FileNotFoundError(f"{layer}/{table} has no partition {_key(session)} ({path})")
        return pl.read_parquet(path, columns=columns)

    def scan(self, layer: str, table: str, session: dt.date | str) -> pl.LazyFrame:
        path = self.partition_file(layer, table, session)
        if not path.exists():
            raise FileNotFoundError(f"{layer}/{table} has no partition {_key(session)} ({path})")
        return pl.scan_parquet(path)

    def file_metadata(self, layer: str, table: str, session: dt.date | str) -> dict[str, str]:
        meta = pq.read_schema(self.partition_file(layer, table, session)).metadata or {}
        return {k.decode(): v.decode() for k, v in meta.items() if not k.startswith(b"ARROW")}


@dataclass(frozen=True)
class WriteResult:
    path: Path
    rows: int


def _key(session: dt.date | str) -> str:
    return session.isoformat() if isinstance(session, dt.date) else str(session)


def prefetched(items: Iterable, depth: int = 2) -> Iterator:
    """Produce `items` in a background thread, `depth` ahead of the consumer.

    Decoding the next chunk (DBN decoder, numpy, polars) and compressing the previous one
    (Parquet/zstd) both release the GIL, so on two cores they overlap. An exception in the
    producer is re-raised in the consumer; a consumer that stops early stops the producer.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done, stop = object(), threading.Event()

    def offer(item) -> bool:
        """Hand `item` to the consumer unless it has gone away (then the producer just ends)."""
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
            offer(done)
        except BaseException as exc:  # handed to the consumer, which raises it
            offer(exc)

    worker = threading.Thread(target=produce, name="lake-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = buffer.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)


def write_json_atomic(path: Path, payload: object) -> Path:
    """JSON written to a temp file and renamed over `path` (readers never see half a report)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex}"
    tmp.write_text(json.dumps(jsonable(payload), indent=2, sort_keys=True, default=str, allow_nan=False))
    tmp.replace(path)
    return path


def _publish(tmp_dir: Path, final_dir: Path) -> None:
    """Swap `tmp_dir` into `final_dir`; the old partition is removed only after the new one is in place."""
    if final_dir.exists():
        trash = final_dir.parent / f".trash-{final_dir.name}-{uuid.uuid4().hex}"
        final_dir.rename(trash)
        tmp_dir.rename(final_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        tmp_dir.rename(final_dir)


def arrow_schema_of(schema: dict[str, pl.DataType]) -> pa.Schema:
    return pl.DataFrame(schema=schema).to_arrow().schema
