"""Pure rules behind bad-input handling: price sanity, duplicates, tier shortfall, batch names."""

from __future__ import annotations

import datetime as dt
import shutil

import numpy as np
import polars as pl
import pytest

from spymaster_assets.bronze.futures import required_prices
from spymaster_assets.lib.dbn_decode import UNDEF_PRICE, trades_frame
from spymaster_assets.lib.quality import duplicate_records, price_sanity
from spymaster_assets.lib.tiers import costs_data, stand_in_role, tier_shortfall
from spymaster_assets.sources.base import FUTURES, OPTIONS
from spymaster_assets.sources.local import LocalDbnSource, batch_name
from spymaster_assets.synthetic.dbn_writer import empty_records

ALL_OPTIONS = {(OPTIONS, "definition"), (OPTIONS, "trades"), (OPTIONS, "statistics")}


def prices(*values: float) -> pl.LazyFrame:
    return pl.LazyFrame({"price": list(values)}, schema={"price": pl.Float64})


def test_clean_prices_pass():
    verdict = price_sanity(prices(6000.0, 6000.25, 6001.75, 5999.5), {"price": None}, reference=6000.0)
    assert verdict["bad_rows"] == 0 and verdict["problems"] == {}


def test_each_kind_of_bad_price_is_counted_by_name():
    # 0 and −1 are non-positive; 6000.1 is off the 0.25 tick; 6700 is 11.7 % above 6000; NaN is UNDEF.
    frame = prices(6000.0, 0.0, -1.0, 6000.1, 6700.0, float("nan"), 5400.25)
    verdict = price_sanity(frame, {"price": None}, reference=6000.0)
    assert verdict["problems"] == {"price": {"non_positive": 2, "off_tick": 1, "outside_band": 1, "undefined": 1}}
    assert verdict["bad_rows"] == 5  # 5400.25 is 9.996 % below: inside the band
    assert verdict["reference_source"] == "previous_session_close"


def test_without_a_previous_close_the_session_median_is_the_reference():
    # Six zeros among 20 sane trades: the median of the positive prices (6000.0) anchors the band,
    # so the zeros are non-positive and nothing sane is pushed out of the band.
    frame = prices(*([6000.0] * 10 + [6000.25] * 10 + [0.0] * 6))
    verdict = price_sanity(frame, {"price": None}, reference=None)
    assert verdict["reference"] == pytest.approx(6000.125) and verdict["reference_source"] == "session_median"
    assert verdict["problems"] == {"price": {"non_positive": 6}} and verdict["bad_rows"] == 6


def test_a_book_level_is_checked_only_while_it_has_size():
    book = pl.LazyFrame({
        "price": [6000.0, float("nan"), 6000.0],
        "action": ["A", "R", "A"],
        "bid_px_00": [5999.75, float("nan"), float("nan")],  # row 2: an empty level (UNDEF, size 0) is fine
        "bid_sz_00": [3, 0, 5],  # row 3: size without a price is not
    })
    verdict = price_sanity(book, {"price": pl.col("action") != "R", "bid_px_00": pl.col("bid_sz_00") > 0}, 6000.0)
    assert verdict["problems"] == {"bid_px_00": {"undefined": 1}}


def test_undef_trade_price_decodes_to_nan_and_is_named_undefined():
    records = empty_records("trades", 2)
    records["price"] = [6_000_250_000_000, UNDEF_PRICE]
    frame = trades_frame(records)
    assert np.isnan(frame["price"][1])
    verdict = price_sanity(frame.lazy(), required_prices("trades"), reference=6000.0)
    assert verdict["problems"] == {"price": {"undefined": 1}}


def test_duplicates_count_repeats_of_the_key():
    frame = pl.LazyFrame({"ts": [1, 2, 2, 3, 3, 3], "px": [1.0, 2.0, 2.0, 3.0, 3.0, 4.0]})
    assert duplicate_records(frame, ["ts", "px"]) == 2
    assert duplicate_records(frame, ["ts"]) == 3
    assert duplicate_records(frame.head(0), ["ts"]) == 0


@pytest.mark.parametrize(
    ("available", "stand_ins", "expected"),
    [
        ({(FUTURES, "trades")}, {(FUTURES, "mbp-10")}, ("T1", "T2")),
        ({(FUTURES, "trades")} | ALL_OPTIONS, {stand_in_role(FUTURES, "mbo")}, ("T1", "T3")),
        ({(FUTURES, "trades"), (FUTURES, "mbp-10")}, {stand_in_role(FUTURES, "tbbo")}, ("T2", "T2")),  # harmless extra
        (set(), {stand_in_role(None, "ohlcv-1m")}, ("NONE", "T0")),  # unknown venue counts as futures
        ({(FUTURES, "trades")}, {stand_in_role(OPTIONS, "mbo"), None}, ("T1", "T1")),  # options book: no tier
    ],
)
def test_tier_shortfall(available, stand_ins, expected):
    assert tier_shortfall(available, stand_ins) == expected


def test_batch_names_place_files_and_catch_contradicting_metadata(fixtures, tmp_path):
    name = batch_name(tmp_path / "glbx-mdp3-20241209.mbp-10.dbn.zst")
    assert (name.dataset, name.schema) == ("GLBX.MDP3", "mbp-10")
    assert name.start_ns == int(dt.datetime(2024, 12, 9, tzinfo=dt.timezone.utc).timestamp()) * 1_000_000_000
    assert batch_name(tmp_path / "my_book.dbn.zst") is None

    futures = tmp_path / "futures"
    futures.mkdir()
    # An MBO file saved under an MBP-10 batch name, and an unreadable file under a batch name.
    shutil.copy(fixtures / "databento-format" / "test_data.mbo.dbn.zst", futures / "glbx-mdp3-20241209.mbp-10.dbn.zst")
    (futures / "glbx-mdp3-20241209.trades.dbn.zst").write_bytes(b"\x28\xb5\x2f\xfd garbage")
    session = LocalDbnSource(tmp_path).acquire(dt.date(2024, 12, 9))
    unusable = {u.path.name: u for u in session.unusable}
    mbp10 = unusable["glbx-mdp3-20241209.mbp-10.dbn.zst"]
    assert mbp10.placed and (mbp10.venue, mbp10.schema) == (FUTURES, "mbp-10")
    assert "named as GLBX.MDP3 mbp-10 of 2024-12-09 but its metadata says schema mbo, range 2020" in mbp10.reason
    trades = unusable["glbx-mdp3-20241209.trades.dbn.zst"]
    assert trades.placed and (trades.venue, trades.schema) == (FUTURES, "trades")
    # Another session is not blamed for them.
    assert LocalDbnSource(tmp_path).acquire(dt.date(2024, 12, 11)).unusable == ()


@pytest.mark.parametrize(
    ("available", "venue", "schema", "costs"),
    [
        ({(FUTURES, "ohlcv-1m")}, FUTURES, "ohlcv-1m", True),  # a cut file of a day that has another: still lost data
        ({(FUTURES, "trades")}, FUTURES, "mbo", True),  # MBO instead of MBP-10
        ({(FUTURES, "trades"), (FUTURES, "mbp-10")}, FUTURES, "mbo", False),  # MBO beside MBP-10
        ({(FUTURES, "trades")}, FUTURES, "status", False),  # nothing reads it
        ({(FUTURES, "trades")}, OPTIONS, "mbo", False),
        ({(FUTURES, "trades")}, None, "trades", True),  # venue unknown: taken as futures
        ({(FUTURES, "trades")}, None, None, False),  # nothing known about it
    ],
)
def test_which_unusable_files_cost_the_session_data(available, venue, schema, costs):
    assert costs_data(available, venue, schema) is costs


def test_a_file_of_another_dataset_covering_the_session_is_reported(fixtures, tmp_path):
    from spymaster_assets_tests.test_sources_local import TRADES_V1, _reencode

    _reencode(fixtures / "real-es-dbn" / TRADES_V1, tmp_path / "es_trades.dbn.zst", dataset="XNAS.ITCH")
    _reencode(fixtures / "real-es-dbn" / TRADES_V1, tmp_path / "glbx-mdp3-20240702.trades.dbn.zst", dataset="XNAS.ITCH")
    session = LocalDbnSource(tmp_path).acquire(dt.date(2024, 7, 2))
    assert not session.files
    reasons = {u.path.name: u.reason for u in session.unusable}
    assert reasons["es_trades.dbn.zst"] == "dataset XNAS.ITCH, expected GLBX.MDP3"
    assert "named as GLBX.MDP3 trades of 2024-07-02 but its metadata says dataset XNAS.ITCH" in reasons[
        "glbx-mdp3-20240702.trades.dbn.zst"]
    assert all(costs_data(set(session.files), u.venue, u.schema) for u in session.unusable)
