"""Chunked decoding of Databento DBN files into typed polars frames.

Every schema goes through one path: the file's records are read as structured arrays in the
file's own record layout (DBN v1–v3, the dtype `DBNStore.to_ndarray` gives), rows are
filtered with numpy masks *before* any column is materialized, and only the columns of the
bronze schema are copied into polars. A real ES day is 5–25 M MBP-10 records, so nothing
here ever holds a whole file as Python objects or as one frame: a read chunk is at most
`MAX_CHUNK_BYTES`.

The records are decompressed straight into reusable arrays (`ChunkBuffers`) rather than
through `to_ndarray`, which returns a new `bytes` object per chunk: the kernel then faults in
and zeroes every page of the day's 3 GB of records again, and that was half of decoding's
CPU (2.5 of 5.2 CPU-s on 8.3 M MBP-10 records; 1.9 CPU-s with reused buffers).

Trades and books (10–63 fields per record) are turned into columns by one pass over the
kept records in cache-sized blocks (`GatheredColumns`); the frames it yields have a fixed number of rows
(`FRAME_ROWS`, the last one fewer), so a bronze table's row groups do not depend on the
read chunk size or on how many rows the filter drops.
"""

from __future__ import annotations

import collections
import functools
import struct
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import databento as db
from databento.common.error import BentoWarning
import numpy as np
import polars as pl

from .prefetch import prefetched

FIXED_PRICE_SCALE = 1e9
UNDEF_PRICE = np.iinfo(np.int64).max
UNDEF_TIMESTAMP = np.iinfo(np.uint64).max
STAT_TYPE_OPEN_INTEREST = 9  # databento_dbn.StatType.OPEN_INTEREST
DEFAULT_CHUNK_RECORDS = 1_000_000
# A 1 M-record MBP-10 chunk is 368 MB, and the reader holds two while it reads the next:
# cap a chunk by bytes so a wide schema costs no more memory than a narrow one. 16 MB chunks
# decode faster than 64 MB ones (0.23 vs 0.30 CPU-s per M MBP-10 records, reused buffers).
MAX_CHUNK_BYTES = 16 << 20
DBN_PREFIX = b"DBN"  # a DBN stream starts with b"DBN", a version byte and the u32 length of its metadata
# Rows of each gathered frame (trades, books); bronze writes one Parquet row group per frame.
FRAME_ROWS = 1 << 18
GATHER_BLOCK = 1024  # records per block of the gather pass (1024 MBP-10 records = 377 KB: stays in L2)
BOOK_DEPTH = 10


class DbnDecodeError(RuntimeError):
    """A DBN file could not be decoded (truncated, corrupt, or not the schema it should be)."""


# Aggressor convention (SPEC §2): Databento's trade `side` is the aggressor's side.
# 'B' = buyer-initiated (+1), 'A' = seller-initiated (-1), 'N' = unknown (0).
AGGRESSOR_BY_SIDE = {b"B": 1, b"A": -1, b"N": 0}


_AGGRESSOR_BY_BYTE = np.zeros(256, np.int8)
_AGGRESSOR_BY_BYTE[[ord(code) for code in AGGRESSOR_BY_SIDE]] = list(AGGRESSOR_BY_SIDE.values())
# Byte code → 1-char string by a table lookup (NUL → "", as numpy's S1 reads it); codes are ASCII.
_CHAR_BY_BYTE = pl.Series([chr(code) if code else "" for code in range(128)], dtype=pl.Utf8)


def _byte_codes(raw: np.ndarray) -> np.ndarray:
    """Single-byte codes as uint8, from a record field (S1) or a gathered column (uint8)."""
    raw = np.asarray(raw)
    return raw if raw.dtype == np.uint8 else raw.astype("S1").view(np.uint8)


def aggressor_sign(side: np.ndarray) -> np.ndarray:
    """+1 / −1 / 0 from Databento side bytes ('B' / 'A' / anything else)."""
    return _AGGRESSOR_BY_BYTE[_byte_codes(side)]


def _price(raw: np.ndarray) -> np.ndarray:
    out = raw.astype(np.float64) / FIXED_PRICE_SCALE
    out[raw == UNDEF_PRICE] = np.nan
    return out


def _char(raw: np.ndarray) -> pl.Series:
    """Single-byte codes (action, side, instrument_class) as 1-char strings (a NUL byte is "")."""
    codes = _byte_codes(raw)
    if codes.size and codes.max() >= len(_CHAR_BY_BYTE):
        raise DbnDecodeError(f"a single-byte code is not ASCII ({int(codes.max()):#x})")
    return _CHAR_BY_BYTE.gather(pl.Series(codes, dtype=pl.UInt8))


def _text(raw: np.ndarray) -> pl.Series:
    return pl.Series([v.decode("ascii", "replace").rstrip("\x00") for v in raw], dtype=pl.Utf8)


def _ts(raw: np.ndarray) -> np.ndarray:
    return raw.astype(np.int64)


def _nullable_ts(raw: np.ndarray) -> pl.Series:
    """Timestamps where Databento's UNDEF_TIMESTAMP (u64 max) becomes null."""
    values = pl.Series(raw.astype(np.uint64).view(np.int64))
    return values.scatter(np.flatnonzero(raw == UNDEF_TIMESTAMP), None)


# --- one pass from records to columns (trades, books) --------------------------------------

@dataclass(frozen=True)
class RecordFields:
    """The record fields a gathered frame needs, by how each is converted: fixed-point prices to
    float points (UNDEF → NaN), u64 timestamps to i64 ns, u32 fields as they are, single bytes."""

    prices: tuple[str, ...]
    timestamps: tuple[str, ...]
    uint32s: tuple[str, ...]
    bytes_: tuple[str, ...]


def _book_fields(depth: int) -> RecordFields:
    levels = [(level, side) for level in range(depth) for side in ("bid", "ask")]
    return RecordFields(
        prices=("price", *(f"{side}_px_{level:02d}" for level, side in levels)),
        timestamps=("ts_event", "ts_recv"),
        uint32s=("instrument_id", "size", "sequence",
                 *(f"{side}_{kind}_{level:02d}" for level, side in levels for kind in ("sz", "ct"))),
        bytes_=("action", "side", "flags", "depth"),
    )


class GatheredColumns:
    """Up to `capacity` rows of `fields`, filled from record chunks block by block.

    A per-field pass over 368-byte MBP-10 records reads a whole cache line for each 4–8-byte
    value, 63 times per record. Here the kept records of a block (GATHER_BLOCK of them, small
    enough to stay in L2) are copied together once, and every field is then taken from that
    cached copy; numpy releases the GIL for the copies, so the Parquet writer thread runs
    beside. Builders index it like a record array, by field name, and get typed columns
    (prices already in points, UNDEF as NaN).
    """

    def __init__(self, fields: RecordFields, capacity: int):
        self.fields, self.capacity, self.size = fields, capacity, 0
        self._prices = np.empty((len(fields.prices), capacity), np.float64)
        self._timestamps = np.empty((len(fields.timestamps), capacity), np.int64)
        self._uint32s = np.empty((len(fields.uint32s), capacity), np.uint32)
        self._bytes = np.empty((len(fields.bytes_), capacity), np.uint8)
        self._where = {
            **{name: (self._prices, k) for k, name in enumerate(fields.prices)},
            **{name: (self._timestamps, k) for k, name in enumerate(fields.timestamps)},
            **{name: (self._uint32s, k) for k, name in enumerate(fields.uint32s)},
            **{name: (self._bytes, k) for k, name in enumerate(fields.bytes_)},
        }

    @property
    def full(self) -> bool:
        return self.size == self.capacity

    def fill(self, rec: np.ndarray, rows: np.ndarray) -> int:
        """Append records `rows` of `rec` (as many as fit); returns how many were taken."""
        rows = rows[: self.capacity - self.size]
        price_at, ts_at, u32_at, byte_at = _field_offsets(rec.dtype, self.fields)
        words = _record_words(rec)
        for first in range(0, rows.size, GATHER_BLOCK):
            block = words[rows[first : first + GATHER_BLOCK]]
            out = slice(self.size + first, self.size + first + len(block))
            raw = block[:, price_at]
            prices = raw / FIXED_PRICE_SCALE
            prices[raw == UNDEF_PRICE] = np.nan
            self._prices[:, out] = prices.T
            self._timestamps[:, out] = block[:, ts_at].T
            self._uint32s[:, out] = block.view(np.uint32)[:, u32_at].T
            self._bytes[:, out] = block.view(np.uint8)[:, byte_at].T
        self.size += rows.size
        return rows.size

    def __getitem__(self, field: str) -> np.ndarray:
        block, k = self._where[field]
        return block[k, : self.size]

    def __len__(self) -> int:
        return self.size


def gather_columns(rec: np.ndarray, fields: RecordFields, rows: np.ndarray | None = None) -> GatheredColumns:
    """The given rows (default all) of a record array, gathered in one pass."""
    rows = np.arange(len(rec)) if rows is None else rows
    columns = GatheredColumns(fields, len(rows))
    columns.fill(rec, rows)
    return columns


def _record_words(rec: np.ndarray) -> np.ndarray:
    """The records as rows of 8-byte words (zero-copy; `.view` gives the 4- and 1-byte words)."""
    if rec.dtype.itemsize % 8:
        raise DbnDecodeError(f"record size {rec.dtype.itemsize} is not a whole number of 8-byte words")
    return np.ascontiguousarray(rec).view(np.int64).reshape(len(rec), rec.dtype.itemsize // 8)


@functools.cache
def _field_offsets(dtype: np.dtype, fields: RecordFields) -> tuple[np.ndarray, ...]:
    """Each field's index in the 8/8/4/1-byte word views of a record of `dtype` (DBN v1–v3 differ)."""

    def at(names: tuple[str, ...], width: int) -> np.ndarray:
        offsets = [dtype.fields[name][1] for name in names]
        if any(offset % width or dtype.fields[name][0].itemsize != width for name, offset in zip(names, offsets)):
            raise DbnDecodeError(f"record layout {dtype} does not hold {names} as aligned {width}-byte fields")
        return np.array([offset // width for offset in offsets], dtype=np.int64)

    return at(fields.prices, 8), at(fields.timestamps, 8), at(fields.uint32s, 4), at(fields.bytes_, 1)


def _event_columns(rec) -> dict[str, object]:
    return {
        "ts_event": rec["ts_event"],
        "ts_recv": rec["ts_recv"],
        "instrument_id": rec["instrument_id"],
        "action": _char(rec["action"]),
        "side": _char(rec["side"]),
        "aggressor": aggressor_sign(rec["side"]),
        "price": rec["price"],
        "size": rec["size"],
        "flags": rec["flags"],
        "sequence": rec["sequence"],
    }


def _book_frame(columns: GatheredColumns, depth: int) -> pl.DataFrame:
    frame = _event_columns(columns) | {"depth": columns["depth"]}
    for level in range(depth):
        for side in ("bid", "ask"):
            for kind in ("px", "sz", "ct"):
                name = f"{side}_{kind}_{level:02d}"
                frame[name] = columns[name]
    return pl.DataFrame(frame)


EVENT_FIELDS = _book_fields(0)
MBP10_FIELDS = _book_fields(BOOK_DEPTH)
MBP1_FIELDS = _book_fields(1)


def trades_frame(rec: np.ndarray) -> pl.DataFrame:
    return _trades_frame(gather_columns(rec, EVENT_FIELDS))


def mbp10_frame(rec: np.ndarray) -> pl.DataFrame:
    return _book_frame(gather_columns(rec, MBP10_FIELDS), BOOK_DEPTH)


def mbp1_frame(rec: np.ndarray) -> pl.DataFrame:
    return _book_frame(gather_columns(rec, MBP1_FIELDS), 1)


def _trades_frame(columns: GatheredColumns) -> pl.DataFrame:
    return pl.DataFrame(_event_columns(columns))


def ohlcv_frame(rec: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts_event": _ts(rec["ts_event"]),
            "instrument_id": rec["instrument_id"].astype(np.uint32),
            "open": _price(rec["open"]),
            "high": _price(rec["high"]),
            "low": _price(rec["low"]),
            "close": _price(rec["close"]),
            "volume": rec["volume"].astype(np.uint64),
        }
    )


def definition_frame(rec: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts_event": _ts(rec["ts_event"]),
            "ts_recv": _ts(rec["ts_recv"]),
            "instrument_id": rec["instrument_id"].astype(np.uint32),
            "raw_symbol": _text(rec["raw_symbol"]),
            "instrument_class": _char(rec["instrument_class"]),
            "security_type": _text(rec["security_type"]),
            "asset": _text(rec["asset"]),
            "underlying": _text(rec["underlying"]),
            "underlying_id": rec["underlying_id"].astype(np.uint32),
            "strike_price": _price(rec["strike_price"]),
            "expiration": _nullable_ts(rec["expiration"]),
            "activation": _nullable_ts(rec["activation"]),
            "min_price_increment": _price(rec["min_price_increment"]),
        }
    )


def statistics_frame(rec: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts_event": _ts(rec["ts_event"]),
            "ts_recv": _ts(rec["ts_recv"]),
            "ts_ref": _ts(rec["ts_ref"]),
            "instrument_id": rec["instrument_id"].astype(np.uint32),
            "stat_type": rec["stat_type"].astype(np.uint16),
            "price": _price(rec["price"]),
            "quantity": rec["quantity"].astype(np.int64),
            "update_action": rec["update_action"].astype(np.uint8),
        }
    )


def _book_schema(depth: int) -> dict[str, pl.DataType]:
    schema = dict(EVENT_SCHEMA) | {"depth": pl.UInt8}
    for level in range(depth):
        for side in ("bid", "ask"):
            schema |= {
                f"{side}_px_{level:02d}": pl.Float64,
                f"{side}_sz_{level:02d}": pl.UInt32,
                f"{side}_ct_{level:02d}": pl.UInt32,
            }
    return schema


EVENT_SCHEMA: dict[str, pl.DataType] = {
    "ts_event": pl.Int64,
    "ts_recv": pl.Int64,
    "instrument_id": pl.UInt32,
    "action": pl.Utf8,
    "side": pl.Utf8,
    "aggressor": pl.Int8,
    "price": pl.Float64,
    "size": pl.UInt32,
    "flags": pl.UInt8,
    "sequence": pl.UInt32,
}

# The typed columns each decoded schema yields (also the schema of an empty partition).
FRAME_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "trades": dict(EVENT_SCHEMA),
    "mbp-10": _book_schema(BOOK_DEPTH),
    "mbp-1": _book_schema(1),
    "ohlcv-1m": {
        "ts_event": pl.Int64,
        "instrument_id": pl.UInt32,
        "open": pl.Float64,
        "high": pl.Float64,
        "low": pl.Float64,
        "close": pl.Float64,
        "volume": pl.UInt64,
    },
    "definition": {
        "ts_event": pl.Int64,
        "ts_recv": pl.Int64,
        "instrument_id": pl.UInt32,
        "raw_symbol": pl.Utf8,
        "instrument_class": pl.Utf8,
        "security_type": pl.Utf8,
        "asset": pl.Utf8,
        "underlying": pl.Utf8,
        "underlying_id": pl.UInt32,
        "strike_price": pl.Float64,
        "expiration": pl.Int64,
        "activation": pl.Int64,
        "min_price_increment": pl.Float64,
    },
    "statistics": {
        "ts_event": pl.Int64,
        "ts_recv": pl.Int64,
        "ts_ref": pl.Int64,
        "instrument_id": pl.UInt32,
        "stat_type": pl.UInt16,
        "price": pl.Float64,
        "quantity": pl.Int64,
        "update_action": pl.UInt8,
    },
}

FRAME_BUILDERS: dict[str, Callable[[np.ndarray], pl.DataFrame]] = {
    "trades": trades_frame,
    "mbp-10": mbp10_frame,
    "mbp-1": mbp1_frame,
    "ohlcv-1m": ohlcv_frame,
    "definition": definition_frame,
    "statistics": statistics_frame,
}


# Trades and books are gathered in one pass into frames of `frame_rows`; the other schemas
# (a few thousand narrow records a day) are built chunk by chunk from the kept records.
GATHERED: dict[str, tuple[RecordFields, Callable[[GatheredColumns], pl.DataFrame]]] = {
    "trades": (EVENT_FIELDS, _trades_frame),
    "mbp-10": (MBP10_FIELDS, functools.partial(_book_frame, depth=BOOK_DEPTH)),
    "mbp-1": (MBP1_FIELDS, functools.partial(_book_frame, depth=1)),
}


@dataclass(frozen=True)
class DecodeStats:
    records_read: int
    records_kept: int


def open_store(path: Path, expected_schema: str | None = None) -> db.DBNStore:
    """Open a DBN file, turning library errors into a DbnDecodeError that names the file."""
    try:
        store = db.DBNStore.from_file(path)
        schema = str(store.schema) if store.schema is not None else None
    except Exception as exc:  # the client raises ValueError/DBNError/zstd errors for bad input
        raise DbnDecodeError(f"{path}: not a readable DBN file ({type(exc).__name__}: {exc})") from exc
    if expected_schema is not None and schema != expected_schema:
        raise DbnDecodeError(f"{path}: expected schema {expected_schema!r}, file has {schema!r}")
    return store


class ChunkBuffers:
    """Record arrays for the reader to fill, handed back by a consumer once it has copied out
    what it needs, so that a handful of arrays serves a whole file (no page faults per chunk).

    A consumer that never hands a chunk back costs only a fresh array per chunk; one that hands
    back a chunk it still reads would see it overwritten — so only consumers that copy every
    column they keep (the one-pass gather of trades and books) use buffers."""

    def __init__(self) -> None:
        self._free: collections.deque[np.ndarray] = collections.deque()  # append/pop are thread-safe

    def take(self, dtype: np.dtype, count: int) -> np.ndarray:
        while self._free:
            buffer = self._free.pop()
            if buffer.dtype == dtype and len(buffer) == count:
                return buffer
        return np.empty(count, dtype)

    def give_back(self, chunk: np.ndarray) -> None:
        self._free.append(chunk if chunk.base is None else chunk.base)


def iter_record_chunks(path: Path, schema: str, chunk_records: int = DEFAULT_CHUNK_RECORDS,
                       buffers: ChunkBuffers | None = None) -> Iterator[np.ndarray]:
    """Structured record arrays of at most `chunk_records` and at most MAX_CHUNK_BYTES, in file order.

    The next chunk is decompressed in a thread while the caller works on this one (zstd
    releases the GIL): decompression is the whole cost of decoding, and it then overlaps
    with the column gather and the Parquet write. With `buffers`, chunks are taken from it
    (the caller gives each back when done with it)."""
    return prefetched(_record_chunks(path, schema, chunk_records, buffers), depth=1, name="dbn-read-ahead")


def _record_chunks(path: Path, schema: str, chunk_records: int, buffers: ChunkBuffers | None) -> Iterator[np.ndarray]:
    store = open_store(path, schema)
    # One record tells the record layout of this file's DBN version before the chunk size is chosen.
    probe = _next_chunk(path, iter(store.to_ndarray(count=1)))
    if probe is None:
        return
    dtype = probe.dtype
    count = max(1, min(chunk_records, MAX_CHUNK_BYTES // dtype.itemsize))
    with _records_stream(path, store) as stream:
        while True:
            chunk = buffers.take(dtype, count) if buffers is not None else np.empty(count, dtype)
            filled = _read_into(path, stream, chunk.view(np.uint8))
            if filled % dtype.itemsize:
                raise DbnDecodeError(f"{path}: DBN records are truncated or corrupt (the file ends "
                                     f"{filled % dtype.itemsize} bytes into a {dtype.itemsize}-byte record)")
            if filled:
                yield chunk[: filled // dtype.itemsize]
            elif buffers is not None:
                buffers.give_back(chunk)
            if filled < chunk.nbytes:
                return


def _records_stream(path: Path, store: db.DBNStore):
    """The store's decompressed stream, positioned at its first record (after the metadata)."""
    stream = store.reader
    try:
        prefix = stream.read(8)
        if len(prefix) < 8 or prefix[:3] != DBN_PREFIX:
            raise DbnDecodeError(f"{path}: not a DBN stream")
        stream.read(struct.unpack("<I", prefix[4:8])[0])
    except DbnDecodeError:
        stream.close()
        raise
    except Exception as exc:
        stream.close()
        raise DbnDecodeError(f"{path}: DBN metadata is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    return stream


def _read_into(path: Path, stream, target: np.ndarray) -> int:
    """Fill `target` (bytes) from `stream` until it is full or the stream ends; the bytes read."""
    view, filled = memoryview(target), 0
    try:
        while filled < len(view) and (read := stream.readinto(view[filled:])):
            filled += read
    except Exception as exc:  # zstd raises ZstdError for corrupt frames
        raise DbnDecodeError(f"{path}: DBN records are truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    return filled


def _next_chunk(path: Path, chunks: Iterator[np.ndarray]) -> np.ndarray | None:
    """The next chunk, or None at the end; the client only *warns* about a truncated tail,
    and for us half a file is an error."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=BentoWarning)
        try:
            return next(chunks)
        except StopIteration:
            return None
        except Exception as exc:
            raise DbnDecodeError(f"{path}: DBN records are truncated or corrupt ({type(exc).__name__}: {exc})") from exc


def decode_frames(
    paths: tuple[Path, ...] | list[Path],
    schema: str,
    *,
    ts_range: tuple[int, int] | None = None,
    instrument_ids: np.ndarray | None = None,
    chunk_records: int = DEFAULT_CHUNK_RECORDS,
    stats: list[DecodeStats] | None = None,
    frame_rows: int = FRAME_ROWS,
) -> Iterator[pl.DataFrame]:
    """Decode `paths` chunk by chunk into bronze-typed frames.

    Rows outside [ts_range[0], ts_range[1]) (by ts_event) or whose instrument is not in
    `instrument_ids` are dropped with numpy masks before columns are copied. If `stats`
    is given, one DecodeStats per chunk is appended to it. Trades and books come in frames
    of `frame_rows` rows (the last one fewer), other schemas one frame per chunk.
    """
    gathered = schema in GATHERED  # the gather copies every kept column: its chunks can be reused
    chunks = _kept_records(paths, schema, ts_range, instrument_ids, chunk_records, stats,
                           ChunkBuffers() if gathered else None)
    if gathered:
        yield from _gathered_frames(chunks, *GATHERED[schema], frame_rows)
        return
    build = FRAME_BUILDERS[schema]
    for rec, keep in chunks:
        yield build(rec if keep is None else rec[keep])


def _kept_records(paths, schema, ts_range, instrument_ids, chunk_records, stats,
                  buffers: ChunkBuffers | None) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(chunk, mask of its kept rows or None for all) for chunks that keep any row; with
    `buffers`, a chunk is given back when the consumer asks for the next one."""
    for path in paths:
        for rec in iter_record_chunks(Path(path), schema, chunk_records, buffers):
            keep = np.ones(len(rec), dtype=bool)
            if ts_range is not None:
                ts = rec["ts_event"]
                keep &= (ts >= ts_range[0]) & (ts < ts_range[1])
            if instrument_ids is not None:
                keep &= np.isin(rec["instrument_id"], instrument_ids)
            kept = int(keep.sum())
            if stats is not None:
                stats.append(DecodeStats(len(rec), kept))
            if kept:
                yield rec, None if kept == len(rec) else keep
            if buffers is not None:
                buffers.give_back(rec)


def _gathered_frames(chunks: Iterable[tuple[np.ndarray, np.ndarray | None]], fields: RecordFields,
                     build: Callable[[GatheredColumns], pl.DataFrame], frame_rows: int) -> Iterator[pl.DataFrame]:
    """Frames of exactly `frame_rows` kept records across chunk and file boundaries (the last one fewer)."""
    columns = GatheredColumns(fields, frame_rows)
    for rec, keep in chunks:
        rows = np.arange(len(rec)) if keep is None else np.flatnonzero(keep)
        while rows.size:
            rows = rows[columns.fill(rec, rows):]
            if columns.full:
                yield build(columns)
                columns = GatheredColumns(fields, frame_rows)
    if len(columns):
        yield build(columns)


def instrument_symbols(paths: tuple[Path, ...] | list[Path]) -> dict[int, str]:
    """instrument_id → raw symbol from the files' symbology mappings (input symbols that are not parents)."""
    mapping: dict[int, str] = {}
    for path in paths:
        store = open_store(Path(path))
        for raw_symbol, intervals in store.mappings.items():
            if raw_symbol.endswith((".FUT", ".OPT")):
                continue  # a parent maps to many children; the definitions name them
            for interval in intervals:
                symbol = interval["symbol"]
                if symbol.isdigit():
                    mapping[int(symbol)] = raw_symbol
    return mapping
