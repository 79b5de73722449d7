"""Cheap inspection of DBN files: metadata header, first records, and a structural completeness check.

A real ES day is ~0.6 GB of zstd, so nothing here decompresses a whole file:
- `read_dbn_header` stream-decompresses only the 8-byte prefix and the metadata block
  (whose length the prefix announces) and hands those bytes to `databento_dbn.DBNDecoder`;
- `read_first_records` decodes a handful of records after the metadata;
- `check_dbn_complete` walks the zstd frame and block *headers* (a seek per ~128 KB block,
  no decompression), which catches truncated downloads and copies.

Works for DBN versions 1–3, compressed (`.dbn.zst`) or not (`.dbn`): the format is sniffed
from the magic bytes, never from the file name.
"""

from __future__ import annotations

import datetime as dt
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import databento_dbn
import zstandard

from .base import SourceError

DBN_MAGIC = b"DBN"
DBN_PREFIX_LEN = 8  # b"DBN" + version byte + u32 little-endian metadata length
SUPPORTED_DBN_VERSIONS = (1, 2, 3)
ZSTD_FRAME_MAGIC = 0xFD2FB528
ZSTD_SKIPPABLE_MAGIC_MIN, ZSTD_SKIPPABLE_MAGIC_MAX = 0x184D2A50, 0x184D2A5F
# A guard against garbage lengths, far above any real header (ALL_SYMBOLS mappings are tens of MB).
MAX_METADATA_BYTES = 512 * 1024 * 1024
UNDEF_TIMESTAMP = 2**64 - 1


class DbnFileError(SourceError):
    """A file is not readable DBN: not DBN at all, an unsupported version, a corrupt or truncated stream."""


@dataclass(frozen=True)
class SymbolInterval:
    """One symbology mapping interval from the metadata: `symbol` is the mapped-to value (e.g. an instrument id)."""

    start_date: dt.date
    end_date: dt.date
    symbol: str


@dataclass(frozen=True)
class DbnHeader:
    """The metadata block of a DBN file. `end_ns` is None when the header leaves it undefined (live captures)."""

    version: int
    dataset: str
    schema: str | None
    start_ns: int
    end_ns: int | None
    symbols: tuple[str, ...]
    stype_in: str | None
    stype_out: str
    mappings: dict[str, tuple[SymbolInterval, ...]] = field(default_factory=dict, hash=False, compare=False)
    compressed: bool = False
    ts_out: bool = False


def read_dbn_header(path: Path) -> DbnHeader:
    """Decode the metadata of a DBN file, reading only its first bytes. Raises DbnFileError naming the file."""
    path = Path(path)
    with _decompressed_stream(path) as (stream, compressed):
        prefix, metadata_bytes = _read_metadata_bytes(path, stream)
    version = prefix[3]
    decoder = databento_dbn.DBNDecoder(upgrade_policy=databento_dbn.VersionUpgradePolicy.AS_IS)
    metadata = _decode_metadata(path, decoder, prefix + metadata_bytes)
    return DbnHeader(
        version=version,
        dataset=str(metadata.dataset),
        schema=_enum_text(metadata.schema),
        start_ns=int(metadata.start),
        end_ns=None if metadata.end is None or int(metadata.end) == UNDEF_TIMESTAMP else int(metadata.end),
        symbols=tuple(str(s) for s in metadata.symbols),
        stype_in=_enum_text(metadata.stype_in),
        stype_out=str(_enum_text(metadata.stype_out)),
        mappings={
            raw: tuple(
                SymbolInterval(interval["start_date"], interval["end_date"], str(interval["symbol"]))
                for interval in intervals
            )
            for raw, intervals in metadata.mappings.items()
        },
        compressed=compressed,
        ts_out=bool(metadata.ts_out),
    )


def read_first_records(path: Path, count: int = 32) -> list:
    """Decode at most `count` records after the metadata (as databento_dbn objects, in the file's own version)."""
    path = Path(path)
    with _decompressed_stream(path) as (stream, _):
        prefix, metadata_bytes = _read_metadata_bytes(path, stream)
        decoder = databento_dbn.DBNDecoder(upgrade_policy=databento_dbn.VersionUpgradePolicy.AS_IS)
        _decode_metadata(path, decoder, prefix + metadata_bytes)
        records: list = []
        while len(records) < count:
            # Every DBN record starts with its length in 4-byte words.
            first = _read_up_to(path, stream, 1)
            if not first:
                break
            length = first[0] * 4
            if length < 16:
                raise DbnFileError(f"{path}: corrupt DBN record header (length {length} bytes)")
            body = _read_up_to(path, stream, length - 1)
            if len(body) < length - 1:
                raise DbnFileError(f"{path}: truncated DBN record after {len(records)} records")
            try:
                decoder.write(first + body)
                records.extend(decoder.decode())
            except Exception as exc:  # databento_dbn raises its own DBNError (a plain Exception subclass)
                raise DbnFileError(f"{path}: cannot decode DBN records: {exc}") from exc
    return records


def check_dbn_complete(path: Path) -> None:
    """Raise DbnFileError if the file is structurally incomplete (a truncated download or copy).

    zstd: every frame must end with its last block (plus checksum) exactly within the file.
    Uncompressed DBN: the bytes after the metadata must be a whole number of records of the
    first record's size (historical files hold one schema, i.e. one record size).
    Bit-level corruption inside a compressed block is only detected by a full decode.
    """
    path = Path(path)
    with open(path, "rb", buffering=0) as raw:
        magic = raw.read(4)
    if len(magic) == 4 and int.from_bytes(magic, "little") == ZSTD_FRAME_MAGIC:
        _check_zstd_frames(path)
    elif magic[:3] == DBN_MAGIC:
        _check_uncompressed_records(path)
    else:
        raise DbnFileError(f"{path}: not a DBN file (neither DBN nor zstd magic bytes)")


# --- internals -------------------------------------------------------------------------------


@contextmanager
def _decompressed_stream(path: Path) -> Iterator[tuple[BinaryIO, bool]]:
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise DbnFileError(f"{path}: cannot open: {exc}") from exc
    with handle:
        magic = handle.read(4)
        handle.seek(0)
        if len(magic) == 4 and int.from_bytes(magic, "little") == ZSTD_FRAME_MAGIC:
            reader = zstandard.ZstdDecompressor().stream_reader(handle, read_across_frames=True)
            with reader:
                yield reader, True
        elif magic[:3] == DBN_MAGIC:
            yield handle, False
        else:
            raise DbnFileError(f"{path}: not a DBN file (neither DBN nor zstd magic bytes)")


def _read_up_to(path: Path, stream: BinaryIO, size: int) -> bytes:
    """Read `size` bytes or until EOF; zstd readers may return short reads, so loop."""
    chunks: list[bytes] = []
    remaining = size
    try:
        while remaining > 0:
            chunk = stream.read(min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except zstandard.ZstdError as exc:
        raise DbnFileError(f"{path}: corrupt zstd stream: {exc}") from exc
    return b"".join(chunks)


def _read_metadata_bytes(path: Path, stream: BinaryIO) -> tuple[bytes, bytes]:
    prefix = _read_up_to(path, stream, DBN_PREFIX_LEN)
    if len(prefix) < DBN_PREFIX_LEN:
        raise DbnFileError(f"{path}: truncated DBN file (ends within the {DBN_PREFIX_LEN}-byte prefix)")
    if prefix[:3] != DBN_MAGIC:
        raise DbnFileError(f"{path}: not a DBN stream (no 'DBN' prefix after decompression)")
    version = prefix[3]
    if version not in SUPPORTED_DBN_VERSIONS:
        raise DbnFileError(f"{path}: unsupported DBN version {version} (supported: {SUPPORTED_DBN_VERSIONS})")
    (length,) = struct.unpack("<I", prefix[4:8])
    if length > MAX_METADATA_BYTES:
        raise DbnFileError(f"{path}: implausible DBN metadata length {length} bytes")
    metadata_bytes = _read_up_to(path, stream, length)
    if len(metadata_bytes) < length:
        raise DbnFileError(f"{path}: truncated DBN metadata ({len(metadata_bytes)} of {length} bytes)")
    return prefix, metadata_bytes


def _decode_metadata(path: Path, decoder: databento_dbn.DBNDecoder, data: bytes) -> databento_dbn.Metadata:
    try:
        decoder.write(data)
        decoded = decoder.decode()
    except Exception as exc:  # DBNError from the Rust decoder
        raise DbnFileError(f"{path}: cannot decode DBN metadata: {exc}") from exc
    if not decoded or not isinstance(decoded[0], databento_dbn.Metadata):
        raise DbnFileError(f"{path}: DBN metadata did not decode")
    return decoded[0]


def _enum_text(value) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


def _check_zstd_frames(path: Path) -> None:
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        offset, frames = 0, 0
        while offset < size:
            magic_bytes = os.pread(fd, 4, offset)
            if len(magic_bytes) < 4:
                raise DbnFileError(f"{path}: truncated zstd stream (trailing {len(magic_bytes)} bytes)")
            magic = int.from_bytes(magic_bytes, "little")
            if ZSTD_SKIPPABLE_MAGIC_MIN <= magic <= ZSTD_SKIPPABLE_MAGIC_MAX:
                skip = int.from_bytes(os.pread(fd, 4, offset + 4), "little")
                offset += 8 + skip
                continue
            if magic != ZSTD_FRAME_MAGIC:
                raise DbnFileError(f"{path}: corrupt zstd stream (no frame magic at byte {offset})")
            offset = _skip_zstd_frame(path, fd, offset + 4, size)
            frames += 1
        if offset > size:
            raise DbnFileError(f"{path}: truncated zstd stream ({size} bytes, frame needs {offset})")
        if frames == 0:
            raise DbnFileError(f"{path}: empty zstd stream")
    finally:
        os.close(fd)


def _skip_zstd_frame(path: Path, fd: int, offset: int, size: int) -> int:
    """Offset just past the frame whose header starts at `offset` (after the magic), per RFC 8878."""
    descriptor_bytes = os.pread(fd, 1, offset)
    if not descriptor_bytes:
        raise DbnFileError(f"{path}: truncated zstd frame header")
    descriptor = descriptor_bytes[0]
    content_size_flag = descriptor >> 6
    single_segment = (descriptor >> 5) & 1
    has_checksum = (descriptor >> 2) & 1
    dictionary_id_flag = descriptor & 3
    if (descriptor >> 3) & 1:
        raise DbnFileError(f"{path}: corrupt zstd frame header (reserved bit set)")
    content_size_bytes = (1 if single_segment else 0, 2, 4, 8)[content_size_flag]
    offset += 1 + (0 if single_segment else 1) + (0, 1, 2, 4)[dictionary_id_flag] + content_size_bytes
    while True:
        block_header = os.pread(fd, 3, offset)
        if len(block_header) < 3:
            raise DbnFileError(f"{path}: truncated zstd stream (frame ends without its last block)")
        value = int.from_bytes(block_header, "little")
        is_last, block_type, block_size = value & 1, (value >> 1) & 3, value >> 3
        if block_type == 3:
            raise DbnFileError(f"{path}: corrupt zstd stream (reserved block type at byte {offset})")
        offset += 3 + (1 if block_type == 1 else block_size)  # an RLE block stores one byte
        if offset > size:
            raise DbnFileError(f"{path}: truncated zstd stream (a block runs past the end of the file)")
        if is_last:
            return offset + (4 if has_checksum else 0)


def _check_uncompressed_records(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix, metadata_bytes = _read_metadata_bytes(path, handle)
        records_start = DBN_PREFIX_LEN + len(metadata_bytes)
        first = handle.read(1)
    if not first:
        return  # a header-only file (a request that matched no records) is complete
    record_size = first[0] * 4
    if record_size == 0 or (size - records_start) % record_size:
        raise DbnFileError(
            f"{path}: truncated DBN file ({size - records_start} record bytes is not a multiple of {record_size})"
        )
