"""Chunked decoding of Databento DBN files into typed polars frames.

Every schema goes through one path: `DBNStore.to_ndarray(count=chunk)` yields structured
arrays in the file's own record layout (DBN v1–v3), rows are filtered with numpy masks
*before* any column is materialized, and only the columns of the bronze schema are copied
into polars. A real ES day is 5–25 M MBP-10 records, so nothing here ever holds a whole
file as Python objects or as one frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import warnings

import databento as db
from databento.common.error import BentoWarning
import numpy as np
import polars as pl

FIXED_PRICE_SCALE = 1e9
UNDEF_PRICE = np.iinfo(np.int64).max
UNDEF_TIMESTAMP = np.iinfo(np.uint64).max
STAT_TYPE_OPEN_INTEREST = 9  # databento_dbn.StatType.OPEN_INTEREST
DEFAULT_CHUNK_RECORDS = 1_000_000
BOOK_DEPTH = 10


class DbnDecodeError(RuntimeError):
    """A DBN file could not be decoded (truncated, corrupt, or not the schema it should be)."""


# Aggressor convention (SPEC §2): Databento's trade `side` is the aggressor's side.
# 'B' = buyer-initiated (+1), 'A' = seller-initiated (-1), 'N' = unknown (0).
AGGRESSOR_BY_SIDE = {b"B": 1, b"A": -1, b"N": 0}


def aggressor_sign(side: np.ndarray) -> np.ndarray:
    """+1 / −1 / 0 from Databento side bytes ('B' / 'A' / anything else)."""
    side = np.asarray(side, dtype="S1")
    return np.where(side == b"B", 1, np.where(side == b"A", -1, 0)).astype(np.int8)


def _price(raw: np.ndarray) -> np.ndarray:
    out = raw.astype(np.float64) / FIXED_PRICE_SCALE
    out[raw == UNDEF_PRICE] = np.nan
    return out


def _char(raw: np.ndarray) -> pl.Series:
    """Single-byte codes (action, side, instrument_class) as 1-char strings."""
    return pl.Series(np.asarray(raw, dtype="S1")).cast(pl.Utf8)


def _text(raw: np.ndarray) -> pl.Series:
    return pl.Series([v.decode("ascii", "replace").rstrip("\x00") for v in raw], dtype=pl.Utf8)


def _ts(raw: np.ndarray) -> np.ndarray:
    return raw.astype(np.int64)


def _nullable_ts(raw: np.ndarray) -> pl.Series:
    """Timestamps where Databento's UNDEF_TIMESTAMP (u64 max) becomes null."""
    values = pl.Series(raw.astype(np.uint64).view(np.int64))
    return values.scatter(np.flatnonzero(raw == UNDEF_TIMESTAMP), None)


def _event_columns(rec: np.ndarray) -> dict[str, object]:
    return {
        "ts_event": _ts(rec["ts_event"]),
        "ts_recv": _ts(rec["ts_recv"]),
        "instrument_id": rec["instrument_id"].astype(np.uint32),
        "action": _char(rec["action"]),
        "side": _char(rec["side"]),
        "aggressor": aggressor_sign(rec["side"]),
        "price": _price(rec["price"]),
        "size": rec["size"].astype(np.uint32),
        "flags": rec["flags"].astype(np.uint8),
        "sequence": rec["sequence"].astype(np.uint32),
    }


def trades_frame(rec: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(_event_columns(rec))


def _book_frame(rec: np.ndarray, depth: int) -> pl.DataFrame:
    cols = _event_columns(rec)
    cols["depth"] = rec["depth"].astype(np.uint8)
    for level in range(depth):
        for side in ("bid", "ask"):
            cols[f"{side}_px_{level:02d}"] = _price(rec[f"{side}_px_{level:02d}"])
            cols[f"{side}_sz_{level:02d}"] = rec[f"{side}_sz_{level:02d}"].astype(np.uint32)
            cols[f"{side}_ct_{level:02d}"] = rec[f"{side}_ct_{level:02d}"].astype(np.uint32)
    return pl.DataFrame(cols)


def mbp10_frame(rec: np.ndarray) -> pl.DataFrame:
    return _book_frame(rec, BOOK_DEPTH)


def mbp1_frame(rec: np.ndarray) -> pl.DataFrame:
    return _book_frame(rec, 1)


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


class KeptColumns:
    """The kept rows of a structured record chunk, one field at a time.

    `rec[mask]` would copy whole 368-byte MBP-10 records only to read them back field by
    field; compressing each field's strided view instead touches each kept value once
    (measured 2.3× faster for a 1 M-record chunk). Builders index it like the record array.
    """

    def __init__(self, rec: np.ndarray, keep: np.ndarray | None):
        self._rec, self._keep = rec, keep
        self.size = len(rec) if keep is None else int(keep.sum())

    def __getitem__(self, field: str) -> np.ndarray:
        column = self._rec[field]
        return column if self._keep is None else np.compress(self._keep, column)

    def __len__(self) -> int:
        return self.size


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


def iter_record_chunks(path: Path, schema: str, chunk_records: int = DEFAULT_CHUNK_RECORDS) -> Iterator[np.ndarray]:
    """Structured record arrays of at most `chunk_records`, in file order."""
    store = open_store(path, schema)
    chunks = iter(store.to_ndarray(count=chunk_records))
    while True:
        # The client only *warns* about a truncated tail; for us half a file is an error.
        with warnings.catch_warnings():
            warnings.filterwarnings("error", category=BentoWarning)
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except Exception as exc:
                raise DbnDecodeError(
                    f"{path}: DBN records are truncated or corrupt ({type(exc).__name__}: {exc})"
                ) from exc
        yield chunk


def decode_frames(
    paths: tuple[Path, ...] | list[Path],
    schema: str,
    *,
    ts_range: tuple[int, int] | None = None,
    instrument_ids: np.ndarray | None = None,
    chunk_records: int = DEFAULT_CHUNK_RECORDS,
    stats: list[DecodeStats] | None = None,
) -> Iterator[pl.DataFrame]:
    """Decode `paths` chunk by chunk into bronze-typed frames.

    Rows outside [ts_range[0], ts_range[1]) (by ts_event) or whose instrument is not in
    `instrument_ids` are dropped with numpy masks before columns are copied. If `stats`
    is given, one DecodeStats per chunk is appended to it.
    """
    build = FRAME_BUILDERS[schema]
    for path in paths:
        for rec in iter_record_chunks(Path(path), schema, chunk_records):
            keep = np.ones(len(rec), dtype=bool)
            if ts_range is not None:
                ts = rec["ts_event"]
                keep &= (ts >= ts_range[0]) & (ts < ts_range[1])
            if instrument_ids is not None:
                keep &= np.isin(rec["instrument_id"], instrument_ids)
            kept = KeptColumns(rec, None if keep.all() else keep)
            if stats is not None:
                stats.append(DecodeStats(len(rec), len(kept)))
            if len(kept):
                yield build(kept)


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
