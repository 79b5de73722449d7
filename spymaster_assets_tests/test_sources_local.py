"""LocalDbnSource and the DBN header reader on the real fixtures (../shared/fixtures)."""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
from pathlib import Path

import databento_dbn
import pytest
import zstandard

from spymaster_assets.lib.calendar import session_window
from spymaster_assets.sources import local as local_module
from spymaster_assets.sources.base import FUTURES, OPTIONS, SourceError
from spymaster_assets.sources.dbn_header import DbnFileError, check_dbn_complete, read_dbn_header
from spymaster_assets.sources.local import LocalDbnSource, venues_from_symbols

TRADES_V1 = "futures_trades_2024-07-01T23h58_2024-07-02T00h02.dbn.zst"
MBP1_V1 = "futures_mbp-1_2024-07-01T23h58_2024-07-02T00h02.dbn.zst"
OHLCV_FILES = [f"glbx-mdp3-201310{day:02d}.ohlcv-1m.dbn.zst" for day in (7, 8, 9, 10)]


def _ns(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()) * 1_000_000_000


def _decompressed(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return zstandard.ZstdDecompressor().stream_reader(handle).read()


def _reencode(src: Path, dst: Path, *, version: int | None = None, compress: bool = True, **metadata_fields) -> Path:
    """Write `src`'s records under a new metadata block (other symbols/stype, or another DBN version)."""
    policy = {None: databento_dbn.VersionUpgradePolicy.AS_IS, 2: databento_dbn.VersionUpgradePolicy.UPGRADE_TO_V2,
              3: databento_dbn.VersionUpgradePolicy.UPGRADE_TO_V3}[version]
    decoder = databento_dbn.DBNDecoder(upgrade_policy=policy)
    decoder.write(_decompressed(src))
    metadata, *records = decoder.decode()
    fields = dict(
        dataset=metadata.dataset, start=metadata.start, end=metadata.end, stype_in=metadata.stype_in,
        stype_out=metadata.stype_out, schema=metadata.schema, symbols=list(metadata.symbols), version=metadata.version,
    )
    fields.update(metadata_fields)
    data = bytes(databento_dbn.Metadata(**fields)) + b"".join(bytes(r) for r in records)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(zstandard.ZstdCompressor().compress(data) if compress else data)
    return dst


def _names(paths) -> list[str]:
    return [p.name for p in paths]


# --- header reader --------------------------------------------------------------------------------


def test_every_databento_format_header_parses_as_v3_with_its_schema(fixtures):
    files = sorted((fixtures / "databento-format").glob("*.dbn.zst"))
    assert len(files) >= 14
    for path in files:
        schema = path.name.removeprefix("test_data.").removesuffix(".dbn.zst")
        header = read_dbn_header(path)
        assert (header.version, header.dataset, header.schema) == (3, "GLBX.MDP3", schema), path.name
        assert header.symbols == ("ESH1",) and header.compressed
        assert header.start_ns < header.end_ns
        check_dbn_complete(path)


def test_v1_header_of_real_trades_capture(fixtures):
    header = read_dbn_header(fixtures / "real-es-dbn" / TRADES_V1)
    assert header.version == 1
    assert header.schema == "trades" and header.stype_in == "raw_symbol" and header.symbols == ("ESU4",)
    assert header.start_ns == _ns("2024-07-01T23:58:00") and header.end_ns == _ns("2024-07-02T00:02:00")
    assert header.mappings["ESU4"][0].symbol == "118"


def test_v2_and_uncompressed_headers(fixtures, tmp_path):
    src = fixtures / "real-es-dbn" / TRADES_V1
    v2 = _reencode(src, tmp_path / "v2.dbn.zst", version=2)
    plain = tmp_path / "plain.dbn"
    plain.write_bytes(_decompressed(src))
    assert read_dbn_header(v2).version == 2
    plain_header = read_dbn_header(plain)
    assert (plain_header.version, plain_header.compressed, plain_header.schema) == (1, False, "trades")
    check_dbn_complete(v2)
    check_dbn_complete(plain)


def test_truncated_and_random_files_raise_naming_the_file(fixtures, tmp_path):
    data = (fixtures / "real-es-dbn" / MBP1_V1).read_bytes()
    cut_body = tmp_path / "cut_body.dbn.zst"
    cut_body.write_bytes(data[: len(data) // 2])
    cut_prefix = tmp_path / "cut_prefix.dbn.zst"
    cut_prefix.write_bytes(data[:6])
    noise = tmp_path / "noise.dbn.zst"
    noise.write_bytes(random.Random(1).randbytes(4096))
    plain_cut = tmp_path / "plain_cut.dbn"
    plain_cut.write_bytes(_decompressed(fixtures / "real-es-dbn" / MBP1_V1)[:-7])

    read_dbn_header(cut_body)  # the metadata survived; only the body is gone ...
    with pytest.raises(DbnFileError, match=r"cut_body\.dbn\.zst: truncated zstd"):
        check_dbn_complete(cut_body)  # ... which the frame walk catches without decompressing
    with pytest.raises(DbnFileError, match=r"cut_prefix\.dbn\.zst"):
        read_dbn_header(cut_prefix)
    with pytest.raises(DbnFileError, match=r"noise\.dbn\.zst: not a DBN file"):
        read_dbn_header(noise)
    with pytest.raises(DbnFileError, match=r"plain_cut\.dbn: truncated DBN file"):
        check_dbn_complete(plain_cut)


# --- venue classification --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbols", "venues"),
    [
        (["ES.FUT"], {FUTURES}),
        (["ES.OPT", "E1A.OPT"], {OPTIONS}),
        (["ESU4", "ESZ24"], {FUTURES}),
        (["ESU4-ESZ4"], {FUTURES}),
        (["ES.c.0"], {FUTURES}),
        (["ESM4 P5230", "E1AN4 C5500"], {OPTIONS}),
        (["ES.FUT", "ES.OPT"], {FUTURES, OPTIONS}),
        (["ALL_SYMBOLS"], set()),
        (["118", "42449452"], set()),
    ],
)
def test_venues_from_symbols(symbols, venues):
    assert venues_from_symbols(symbols) == venues


# --- LocalDbnSource ---------------------------------------------------------------------------------


def test_ohlcv_sessions_pick_every_overlapping_utc_day_file(fixtures):
    source = LocalDbnSource(fixtures / "real-es-ohlcv-1m")
    expected = {
        dt.date(2013, 10, 7): OHLCV_FILES[:1],  # 18:00 ET Sunday = 22:00 UTC Oct 6: no file for that UTC day
        dt.date(2013, 10, 8): OHLCV_FILES[0:2],
        dt.date(2013, 10, 9): OHLCV_FILES[1:3],
        dt.date(2013, 10, 10): OHLCV_FILES[2:4],
    }
    for session, names in expected.items():
        files = source.acquire(session)
        assert files.source == "local" and files.session == session
        assert set(files.files) == {(FUTURES, "ohlcv-1m")}
        assert _names(files.get(FUTURES, "ohlcv-1m")) == names
    assert source.acquire(dt.date(2013, 10, 4)).files == {}  # before the data: empty, the caller flags it
    assert source.problems == ()


def test_real_es_dbn_classified_by_metadata_not_names(fixtures, tmp_path):
    # Rename everything to opaque names: discovery must not depend on file names.
    for i, path in enumerate(sorted((fixtures / "real-es-dbn").glob("*.dbn.zst"))):
        shutil.copy(path, tmp_path / f"file{i:02d}.dbn.zst")
    source = LocalDbnSource(tmp_path)
    original = {read_dbn_header(p).symbols + (read_dbn_header(p).schema,): p.name
                for p in (fixtures / "real-es-dbn").glob("*.dbn.zst")}
    venue_by_original_name = {
        original[f.header.symbols + (f.header.schema,)]: f.venues for f in source.index()
    }
    assert len(venue_by_original_name) == 7
    for name, venues in venue_by_original_name.items():
        assert venues == {OPTIONS if name.startswith("options") else FUTURES}, name

    session = source.acquire(dt.date(2024, 7, 2))
    trades, mbp1 = session.get(FUTURES, "trades"), session.get(FUTURES, "mbp-1")
    assert len(trades) == 1 and read_dbn_header(trades[0]).start_ns == _ns("2024-07-01T23:58:00")
    assert len(mbp1) == 1 and read_dbn_header(mbp1[0]).schema == "mbp-1"
    assert session.has(FUTURES, "definition") and session.has(FUTURES, "ohlcv-1m")
    assert not any(venue == OPTIONS for venue, _ in session.files)
    window = session_window(dt.date(2024, 7, 2))
    assert window.globex_open_ns <= read_dbn_header(trades[0]).start_ns < window.close_ns

    options_day = source.acquire(dt.date(2024, 5, 9))
    assert set(options_day.files) == {(OPTIONS, "definition"), (OPTIONS, "mbp-1")}


def test_corrupt_files_are_reported_and_block_only_their_sessions(fixtures, tmp_path, caplog):
    ohlcv = fixtures / "real-es-ohlcv-1m"
    shutil.copy(ohlcv / OHLCV_FILES[0], tmp_path / OHLCV_FILES[0])
    # A truncated Databento download: small zstd blocks, so its metadata is still readable.
    mbp1 = (fixtures / "real-es-dbn" / MBP1_V1).read_bytes()
    (tmp_path / "cut_mbp1.dbn.zst").write_bytes(mbp1[: len(mbp1) // 2])
    # A truncated copy whose first zstd block is gone too: its time range is unknown.
    day9 = (ohlcv / OHLCV_FILES[2]).read_bytes()
    (tmp_path / OHLCV_FILES[2]).write_bytes(day9[: len(day9) // 2])
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "random.dbn.zst").write_bytes(random.Random(7).randbytes(2048))
    (tmp_path / "junk" / "random.dbn").write_bytes(b"DBN\x09" + random.Random(8).randbytes(64))
    (tmp_path / "notes.txt").write_text("not named like a DBN file: ignored")

    source = LocalDbnSource(tmp_path)
    assert _names(f.path for f in source.index()) == [OHLCV_FILES[0]]
    problems = {p.path.name: p for p in source.problems}
    assert set(problems) == {"cut_mbp1.dbn.zst", OHLCV_FILES[2], "random.dbn.zst", "random.dbn"}
    assert "truncated zstd stream" in problems["cut_mbp1.dbn.zst"].reason
    assert problems["cut_mbp1.dbn.zst"].header is not None
    assert "truncated DBN file" in problems[OHLCV_FILES[2]].reason and problems[OHLCV_FILES[2]].header is None
    assert "not a DBN file" in problems["random.dbn.zst"].reason
    assert "unsupported DBN version 9" in problems["random.dbn"].reason

    # The truncated capture's header places it in the 2024-07-02 session: it is handed over as
    # unusable for that session, naming it and the venue/schema it claims (raw/dbn_files fails
    # the session or records the lower tier) ...
    july = source.acquire(dt.date(2024, 7, 2))
    placed = {u.path.name: u for u in july.unusable if u.placed}
    assert set(placed) == {"cut_mbp1.dbn.zst"} and not july.files
    assert "truncated zstd stream" in str(placed["cut_mbp1.dbn.zst"])
    assert (placed["cut_mbp1.dbn.zst"].venue, placed["cut_mbp1.dbn.zst"].schema) == (FUTURES, "mbp-1")
    # ... the cut 2013-10-09 copy is placed by its Databento batch name although its header is gone ...
    ninth = source.acquire(dt.date(2013, 10, 9))
    assert [u.path.name for u in ninth.unusable if u.placed] == [OHLCV_FILES[2]]
    assert ninth.unusable[0].schema == "ohlcv-1m"
    # ... other sessions work, and every acquire warns about the files it could not place in time.
    caplog.clear()
    with caplog.at_level("WARNING"):
        seventh = source.acquire(dt.date(2013, 10, 7))
    assert _names(seventh.get(FUTURES, "ohlcv-1m")) == [OHLCV_FILES[0]]
    assert sorted(u.path.name for u in seventh.unusable if not u.placed) == ["random.dbn", "random.dbn.zst"]
    assert "2 DBN file(s)" in caplog.text and "time range is unknown" in caplog.text and "random.dbn.zst" in caplog.text
    with pytest.raises(SourceError, match="4 unusable DBN file"):
        LocalDbnSource(tmp_path, strict=True).acquire(dt.date(2013, 10, 7))


def test_duplicate_copies_are_an_error_not_double_data(fixtures, tmp_path):
    src = fixtures / "real-es-ohlcv-1m" / OHLCV_FILES[0]
    shutil.copy(src, tmp_path / OHLCV_FILES[0])
    (tmp_path / OHLCV_FILES[0].removesuffix(".zst")).write_bytes(_decompressed(src))
    session = LocalDbnSource(tmp_path).acquire(dt.date(2013, 10, 7))
    assert not session.files  # neither copy is used ...
    assert len(session.unusable) == 2 and all("duplicate data" in u.reason for u in session.unusable)  # ... both reported


def test_inconclusive_symbols_fall_back_to_instrument_class_then_directory(fixtures, tmp_path):
    real = fixtures / "real-es-dbn"
    by_id = dict(stype_in=databento_dbn.SType.INSTRUMENT_ID, symbols=["118"])
    _reencode(real / TRADES_V1, tmp_path / "options" / "by_id_trades.dbn.zst", **by_id)
    _reencode(real / TRADES_V1, tmp_path / "misc" / "by_id_trades.dbn.zst", **by_id)
    all_definitions = tmp_path / "misc" / "all_definitions.dbn.zst"
    _reencode(real / "options_definition.dbn.zst", all_definitions, symbols=["ALL_SYMBOLS"])

    source = LocalDbnSource(tmp_path)
    indexed = {str(f.path.relative_to(tmp_path)): f for f in source.index()}
    assert indexed["options/by_id_trades.dbn.zst"].venues == {OPTIONS}
    assert indexed["options/by_id_trades.dbn.zst"].venue_evidence == "directory"
    assert indexed["misc/all_definitions.dbn.zst"].venues == {OPTIONS}
    assert indexed["misc/all_definitions.dbn.zst"].venue_evidence == "instrument_class"
    [problem] = source.problems
    assert problem.path.name == "by_id_trades.dbn.zst" and "cannot tell futures from options" in problem.reason


def test_header_index_is_cached_by_path_size_and_mtime(fixtures, tmp_path, monkeypatch):
    for name in OHLCV_FILES[:2]:
        shutil.copy(fixtures / "real-es-ohlcv-1m" / name, tmp_path / name)
    reads: list[str] = []
    real_read = local_module.read_dbn_header
    monkeypatch.setattr(local_module, "read_dbn_header", lambda p: reads.append(p.name) or real_read(p))

    source = LocalDbnSource(tmp_path)
    source.acquire(dt.date(2013, 10, 8))
    source.acquire(dt.date(2013, 10, 7))
    assert sorted(reads) == sorted(OHLCV_FILES[:2])  # read once each

    touched = tmp_path / OHLCV_FILES[1]
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 1_000_000_000))
    source.index()
    assert reads.count(OHLCV_FILES[1]) == 2 and reads.count(OHLCV_FILES[0]) == 1


def test_missing_root_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        LocalDbnSource(tmp_path / "absent").acquire(dt.date(2013, 10, 7))
