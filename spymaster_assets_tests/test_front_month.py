import datetime as dt

import polars as pl
import pytest

from spymaster_assets.bronze.futures import rth_volume_by_instrument
from spymaster_assets.lib.dbn_decode import instrument_symbols
from spymaster_assets.lib.front_month import NoFrontMonthError, choose_front_month, front_symbol, is_es_outright
from spymaster_assets.sources.base import FUTURES, SessionFiles


def volumes(pairs):
    return pl.DataFrame({"instrument_id": [i for i, _ in pairs], "volume": [v for _, v in pairs]},
                        schema={"instrument_id": pl.UInt32, "volume": pl.UInt64})


SYMBOLS = {1: "ESZ4", 2: "ESH5", 3: "ESZ4-ESH5", 4: "MESZ4", 5: "ESZ4 C6000"}


@pytest.mark.parametrize("symbol,outright", [("ESZ4", True), ("ESH25", True), ("ESZ4-ESH5", False),
                                             ("MESZ4", False), ("ESZ4 C6000", False), ("NQZ4", False)])
def test_outrights_are_recognised_by_symbol(symbol, outright):
    assert is_es_outright(symbol) is outright


def test_front_month_is_the_largest_outright_and_spreads_micros_do_not_count():
    table = choose_front_month(volumes([(1, 700), (2, 300), (3, 10_000), (4, 50_000), (5, 9_999)]), SYMBOLS,
                               volume_source="trades")
    assert front_symbol(table) == "ESZ4"
    assert table["dominance"][0] == pytest.approx(0.7)
    assert not table["roll_contaminated"][0]
    assert set(table["symbol"]) == {"ESZ4", "ESH5"}


def test_roll_week_below_sixty_percent_is_flagged():
    table = choose_front_month(volumes([(1, 450), (2, 550)]), SYMBOLS, volume_source="trades")
    assert front_symbol(table) == "ESH5"
    assert table["dominance"][0] == pytest.approx(0.55)
    assert table["roll_contaminated"].all()


def test_no_outright_volume_is_an_error():
    with pytest.raises(NoFrontMonthError):
        choose_front_month(volumes([(3, 10)]), SYMBOLS, volume_source="trades")


@pytest.mark.parametrize("session", ["2013-10-07", "2013-10-08", "2013-10-09", "2013-10-10"])
def test_real_2013_sessions_select_esz3(fixtures, session):
    day = dt.date.fromisoformat(session)
    folder = fixtures / "real-es-ohlcv-1m"
    paths = tuple(p for p in sorted(folder.glob("*.dbn.zst")) if p.name[10:18] in
                  {(day - dt.timedelta(days=1)).strftime("%Y%m%d"), day.strftime("%Y%m%d")})
    files = SessionFiles(session=day, source="test", files={(FUTURES, "ohlcv-1m"): paths})
    volume, source = rth_volume_by_instrument(files, day, chunk_records=500)
    table = choose_front_month(volume, instrument_symbols(paths), volume_source=source)
    assert source == "ohlcv-1m"
    assert front_symbol(table) == "ESZ3"
    assert table["dominance"][0] > 0.9
