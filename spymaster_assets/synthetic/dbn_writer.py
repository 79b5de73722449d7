"""Writing genuine DBN (version 3) files: metadata header + raw records, zstd-compressed.

Records are numpy structured arrays whose dtypes are the record structs of `databento_dbn`
(`TradeMsg._dtypes`, `MBP10Msg._dtypes`, …) — the same dtypes `DBNStore.to_ndarray()` decodes
into — so `array.tobytes()` is the wire format. Definitions and statistics are few and built
with the library's message classes (`bytes(msg)`), which fill the many UNDEF defaults right.
Compression: one zstd frame per file at a fixed level with no content size or checksum,
written through a stream in bounded chunks; the output is a pure function of the records.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import databento_dbn as dbn
import numpy as np
import zstandard as zstd

from ..sources.dbn_header import SymbolInterval

DATASET = "GLBX.MDP3"
PUBLISHER_GLBX_MDP3 = 1  # GLBX.MDP3.GLBX
ZSTD_LEVEL = 3
FIXED_PRICE_SCALE = 1_000_000_000
FLAGS_BOOK = dbn.F_LAST | dbn.F_PUBLISHER_SPECIFIC  # 130, as on real GLBX book records
FLAGS_TRADE = 0

_RECORD_CLASSES = {
    "trades": (dbn.TradeMsg, dbn.Schema.TRADES, 0),
    "mbp-1": (dbn.MBP1Msg, dbn.Schema.MBP_1, 1),
    "mbp-10": (dbn.MBP10Msg, dbn.Schema.MBP_10, 10),
    "ohlcv-1m": (dbn.OHLCVMsg, dbn.Schema.OHLCV_1M, 0x21),
    "statistics": (dbn.StatMsg, dbn.Schema.STATISTICS, 0x18),
    "definition": (dbn.InstrumentDefMsg, dbn.Schema.DEFINITION, 0x13),
}
RECORD_DTYPES: dict[str, np.dtype] = {name: np.dtype(cls._dtypes) for name, (cls, _, _) in _RECORD_CLASSES.items()}
SCHEMAS: dict[str, dbn.Schema] = {name: schema for name, (_, schema, _) in _RECORD_CLASSES.items()}
RTYPES: dict[str, int] = {name: rtype for name, (_, _, rtype) in _RECORD_CLASSES.items()}


def empty_records(schema: str, n: int) -> np.ndarray:
    """n zeroed records of `schema` with the header fields (length, rtype, publisher) set."""
    dtype = RECORD_DTYPES[schema]
    records = np.zeros(n, dtype=dtype)
    records["length"] = dtype.itemsize // 4
    records["rtype"] = RTYPES[schema]
    records["publisher_id"] = PUBLISHER_GLBX_MDP3
    return records


@dataclass(frozen=True)
class _Mapping:
    raw_symbol: str
    intervals: list[SymbolInterval]


def _utc_date(ns: int) -> dt.date:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.timezone.utc).date()


def metadata_bytes(schema: str, start_ns: int, end_ns: int, parent: str, ids_by_symbol: dict[str, int]) -> bytes:
    """DBN v3 metadata of a parent-symbology request (`ES.FUT` / `ES.OPT`) with the session's
    raw symbol → instrument id mappings, dated like Databento's (end date exclusive)."""
    first, last = _utc_date(start_ns), _utc_date(end_ns - 1) + dt.timedelta(days=1)
    mappings = [_Mapping(sym, [SymbolInterval(first, last, str(iid))]) for sym, iid in sorted(ids_by_symbol.items())]
    meta = dbn.Metadata(
        dataset=DATASET, start=int(start_ns), end=int(end_ns), stype_in=dbn.SType.PARENT, stype_out=dbn.SType.INSTRUMENT_ID,
        schema=SCHEMAS[schema], symbols=[parent], partial=[], not_found=[], mappings=mappings,
    )
    return bytes(meta.encode())


class DbnWriter:
    """Stream records of one schema into `<path>` (a .dbn.zst file)."""

    def __init__(self, path: Path, schema: str, header: bytes):
        self.path, self.schema = Path(path), schema
        self.records = 0
        self._file = open(self.path, "wb")
        self._stream = zstd.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=False, write_checksum=False).stream_writer(
            self._file, closefd=False
        )
        self._stream.write(header)

    def write(self, records: np.ndarray) -> None:
        if records.dtype != RECORD_DTYPES[self.schema]:
            raise TypeError(f"{self.schema}: records have dtype {records.dtype}, expected {RECORD_DTYPES[self.schema]}")
        self._stream.write(np.ascontiguousarray(records).data)  # the record bytes, without a copy
        self.records += len(records)

    def write_raw(self, payload: bytes, count: int) -> None:
        self._stream.write(payload)
        self.records += count

    def close(self) -> None:
        self._stream.flush(zstd.FLUSH_FRAME)
        self._stream.close()
        self._file.close()

    def __enter__(self) -> DbnWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


BOOK_LEVEL_DTYPE = np.dtype([("bid_px", "<i8"), ("ask_px", "<i8"), ("bid_sz", "<u4"), ("ask_sz", "<u4"),
                             ("bid_ct", "<u4"), ("ask_ct", "<u4")])  # DBN BidAskPair, 32 bytes


def book_levels(records: np.ndarray, depth: int) -> np.ndarray:
    """A writable (rows × depth) view of the flattened bid_px_00 … ask_ct_{depth−1} fields."""
    offset = records.dtype.fields["bid_px_00"][1]
    assert records.dtype.fields[f"bid_px_{depth - 1:02d}"][1] == offset + (depth - 1) * BOOK_LEVEL_DTYPE.itemsize
    return np.ndarray((len(records), depth), dtype=BOOK_LEVEL_DTYPE, buffer=records, offset=offset,
                      strides=(records.dtype.itemsize, BOOK_LEVEL_DTYPE.itemsize))


def to_fixed(points: np.ndarray | float) -> np.ndarray:
    return np.rint(np.asarray(points, dtype=np.float64) * FIXED_PRICE_SCALE).astype(np.int64)
