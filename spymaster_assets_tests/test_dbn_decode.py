import shutil
from pathlib import Path

import databento as db
import numpy as np
import polars as pl
import pytest

from spymaster_assets.lib.dbn_decode import (
    FRAME_BUILDERS,
    FRAME_SCHEMAS,
    UNDEF_PRICE,
    DbnDecodeError,
    aggressor_sign,
    decode_frames,
    instrument_symbols,
    iter_record_chunks,
    mbp10_frame,
    open_store,
)
from spymaster_assets.synthetic.dbn_writer import empty_records

REAL = "real-es-dbn"
TRADES = "futures_trades_2024-07-01T23h58_2024-07-02T00h02.dbn.zst"
BOOK = "futures_mbp-1_2024-07-01T23h58_2024-07-02T00h02.dbn.zst"


def all_fixture_files(root: Path) -> list[Path]:
    return sorted(root.glob("*/*.dbn.zst"))


def test_every_fixture_file_decodes_through_the_reader(fixtures):
    files = all_fixture_files(fixtures)
    assert len(files) >= 25
    for path in files:
        store = db.DBNStore.from_file(path)
        expected = len(store.to_ndarray())
        schema = str(store.schema)
        chunks = list(iter_record_chunks(path, schema, chunk_records=7))
        assert sum(len(c) for c in chunks) == expected, path.name
        if schema in FRAME_BUILDERS:
            frames = list(decode_frames([path], schema, chunk_records=7))
            frame = pl.concat(frames)
            assert frame.height == expected
            assert dict(frame.schema) == FRAME_SCHEMAS[schema], path.name


def test_book_records_become_typed_columns_field_by_field():
    """Three hand-made MBP-10 records through the blocked gather: every kind of field lands in its column."""
    records = empty_records("mbp-10", 3)
    records["ts_event"] = [1, 2, 2**62]
    records["ts_recv"] = [10, 20, 30]
    records["instrument_id"] = [7, 8, 9]
    records["action"], records["side"] = [b"A", b"T", b"R"], [b"B", b"A", b"N"]
    records["price"] = [6_000_250_000_000, 6_000_500_000_000, UNDEF_PRICE]
    records["size"], records["flags"], records["sequence"], records["depth"] = [1, 2, 3], [128, 0, 8], [5, 6, 7], [0, 9, 0]
    records["bid_px_00"], records["ask_px_00"] = [5_999_750_000_000] * 3, [6_000_000_000_000] * 3
    records["bid_px_09"] = [UNDEF_PRICE, 5_997_500_000_000, UNDEF_PRICE]
    records["ask_sz_09"], records["bid_ct_05"], records["ask_ct_09"] = [0, 11, 0], [4, 0, 2**32 - 1], [0, 3, 0]
    frame = mbp10_frame(records)
    assert dict(frame.schema) == FRAME_SCHEMAS["mbp-10"]
    assert frame["ts_event"].to_list() == [1, 2, 2**62] and frame["ts_recv"].to_list() == [10, 20, 30]
    assert frame["action"].to_list() == ["A", "T", "R"] and frame["aggressor"].to_list() == [1, -1, 0]
    assert frame["price"].to_list()[:2] == [6000.25, 6000.5] and np.isnan(frame["price"][2])
    assert frame["bid_px_00"].to_list() == [5999.75] * 3 and frame["ask_px_00"].to_list() == [6000.0] * 3
    assert np.isnan(frame["bid_px_09"][0]) and frame["bid_px_09"][1] == 5997.5
    assert frame["ask_sz_09"].to_list() == [0, 11, 0] and frame["bid_ct_05"].to_list() == [4, 0, 2**32 - 1]
    assert frame["flags"].to_list() == [128, 0, 8] and frame["depth"].to_list() == [0, 9, 0]
    assert frame["sequence"].to_list() == [5, 6, 7] and frame["ask_ct_09"].to_list() == [0, 3, 0]


def test_gathered_frames_do_not_depend_on_chunk_or_frame_size(fixtures):
    """Frames hold exactly `frame_rows` kept rows across chunk boundaries (the last one fewer),
    and the rows are the same whatever the chunking."""
    path = fixtures / REAL / BOOK
    whole = pl.concat(decode_frames([path], "mbp-1"))
    cut = int(whole["ts_event"][1000])
    kept = whole.filter(pl.col("ts_event") >= cut)
    for chunk_records, frame_rows in ((7, 5), (1000, 333), (10**6, 10**6)):
        frames = list(decode_frames([path], "mbp-1", ts_range=(cut, 2**63 - 1), chunk_records=chunk_records,
                                    frame_rows=frame_rows))
        assert [f.height for f in frames[:-1]] == [frame_rows] * (len(frames) - 1) and 0 < frames[-1].height <= frame_rows
        assert pl.concat(frames).equals(kept)


def test_a_non_ascii_code_is_a_clear_error():
    records = empty_records("trades", 1)
    records["action"] = b"\xc3"
    with pytest.raises(DbnDecodeError, match="not ASCII"):
        FRAME_BUILDERS["trades"](records)


def test_aggressor_sign_convention():
    assert aggressor_sign(np.array([b"B", b"A", b"N"], dtype="S1")).tolist() == [1, -1, 0]


def test_aggressor_pinned_on_real_es_trades(fixtures):
    """Databento side 'B' = buyer-initiated: it lifts the offer; 'A' hits the bid."""
    trades = pl.concat(decode_frames([fixtures / REAL / TRADES], "trades")).sort("ts_recv")
    book = (
        pl.concat(decode_frames([fixtures / REAL / BOOK], "mbp-1"))
        .filter(pl.col("action") != "T")
        .select("ts_recv", "bid_px_00", "ask_px_00")
        .sort("ts_recv")
    )
    joined = trades.join_asof(book, on="ts_recv", strategy="backward", allow_exact_matches=False)
    buys = joined.filter(pl.col("aggressor") == 1)
    sells = joined.filter(pl.col("aggressor") == -1)
    assert buys.height == 66 and sells.height == 54
    assert (buys["side"] == "B").all() and (sells["side"] == "A").all()
    assert (buys["price"] == buys["ask_px_00"]).mean() > 0.95
    assert (sells["price"] == sells["bid_px_00"]).mean() > 0.95
    assert (buys["price"] == buys["bid_px_00"]).sum() == 0


def test_real_prices_are_scaled_to_points(fixtures):
    trades = pl.concat(decode_frames([fixtures / REAL / TRADES], "trades"))
    assert trades["price"].min() > 5000 and trades["price"].max() < 6000
    assert ((trades["price"] * 4) % 1 == 0).all()  # ES tick 0.25


def test_symbols_from_file_symbology(fixtures):
    path = fixtures / "real-es-ohlcv-1m" / "glbx-mdp3-20131007.ohlcv-1m.dbn.zst"
    assert set(instrument_symbols([path]).values()) == {"ESZ3", "ESH4", "ESM4"}


def test_time_and_instrument_filters_apply_before_decoding(fixtures):
    path = fixtures / REAL / TRADES
    everything = pl.concat(decode_frames([path], "trades"))
    cut = int(everything["ts_event"][60])
    later = pl.concat(decode_frames([path], "trades", ts_range=(cut, 2**63 - 1)))
    assert later.height == everything.filter(pl.col("ts_event") >= cut).height
    assert list(decode_frames([path], "trades", instrument_ids=np.array([1], dtype=np.uint32))) == []


def test_truncated_file_is_a_clear_error(fixtures, tmp_path):
    source = fixtures / REAL / BOOK
    raw = db.DBNStore.from_file(source)
    plain = tmp_path / "book.dbn"
    raw.to_file(plain)
    data = plain.read_bytes()
    truncated = tmp_path / "truncated.dbn"
    truncated.write_bytes(data[: len(data) - 37])
    with pytest.raises(DbnDecodeError, match="truncated.dbn"):
        list(decode_frames([truncated], "mbp-1"))


def test_corrupt_bytes_are_a_clear_error(tmp_path):
    junk = tmp_path / "junk.dbn.zst"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DbnDecodeError, match="junk.dbn.zst"):
        list(decode_frames([junk], "trades"))


def test_wrong_schema_is_a_clear_error(fixtures, tmp_path):
    path = fixtures / REAL / TRADES
    with pytest.raises(DbnDecodeError, match="expected schema 'mbp-10'"):
        open_store(path, "mbp-10")
    copy = tmp_path / "glbx-mdp3-20240702.mbp-10.dbn.zst"
    shutil.copy(path, copy)  # named like a book file, but the header says trades
    with pytest.raises(DbnDecodeError, match="file has 'trades'"):
        list(decode_frames([copy], "mbp-10"))
