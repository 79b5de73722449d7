import datetime as dt

import polars as pl
import pytest

from spymaster_assets.bronze.futures import futures_symbols, session_volume_by_instrument
from spymaster_assets.lib.calendar import session_window
from spymaster_assets.lib.front_month import (
    CHOSEN_BY_OVERNIGHT_VOLUME,
    CHOSEN_BY_ROLL_CALENDAR,
    NoFrontMonthError,
    choose_front_month,
    contract_expiry,
    front_instrument_ids,
    front_symbol,
    is_es_outright,
    session_volume,
)
from spymaster_assets.sources.base import FUTURES, SessionFiles
from spymaster_assets.sources.local import LocalDbnSource

ROLL_EVE = dt.date(2024, 12, 11)  # ESZ4 expires Fri 2024-12-20; its roll date is Thu 2024-12-12
ROLL_DAY = dt.date(2024, 12, 12)


def volumes(rows):
    """(instrument_id, overnight volume, RTH volume) rows."""
    return pl.DataFrame(rows, schema={"instrument_id": pl.UInt32, "overnight_volume": pl.UInt64, "rth_volume": pl.UInt64},
                        orient="row")


# ESH5 gets the lower id and sorts first alphabetically: neither may decide a tie.
SYMBOLS = {2: "ESZ4", 1: "ESH5", 3: "ESZ4-ESH5", 4: "MESZ4", 5: "ESZ4 C6000", 6: "ESM5"}


@pytest.mark.parametrize("symbol,outright", [("ESZ4", True), ("ESH25", True), ("ESZ4-ESH5", False),
                                             ("MESZ4", False), ("ESZ4 C6000", False), ("NQZ4", False)])
def test_outrights_are_recognised_by_symbol(symbol, outright):
    assert is_es_outright(symbol) is outright


@pytest.mark.parametrize("symbol,session,expiry", [
    ("ESZ4", ROLL_EVE, dt.date(2024, 12, 20)),
    ("ESZ4", dt.date(2024, 12, 20), dt.date(2024, 12, 20)),  # trades until the 09:30 settlement on its expiry day
    ("ESH5", ROLL_EVE, dt.date(2025, 3, 21)),
    ("ESZ3", dt.date(2013, 10, 7), dt.date(2013, 12, 20)),
    ("ESH0", dt.date(2019, 12, 30), dt.date(2020, 3, 20)),  # the year digit wraps into the next decade
    ("ESZ24", ROLL_EVE, dt.date(2024, 12, 20)),
])
def test_contract_expiry_is_the_third_friday_of_the_first_matching_year(symbol, session, expiry):
    assert contract_expiry(symbol, session) == expiry


def test_the_largest_overnight_volume_is_the_front_month_and_spreads_micros_options_do_not_count():
    table = choose_front_month(volumes([(2, 700, 7_000), (1, 300, 3_000), (3, 90_000, 10_000), (4, 90_000, 50_000),
                                        (5, 90_000, 9_999)]), SYMBOLS, ROLL_EVE, volume_source="trades")
    assert front_symbol(table) == "ESZ4" and front_instrument_ids(table) == [2]
    assert table["chosen_by"].unique().to_list() == [CHOSEN_BY_OVERNIGHT_VOLUME]
    assert table["dominance"][0] == pytest.approx(0.7)  # 7000 / (7000 + 3000) of outright RTH volume
    assert not table["roll_contaminated"][0]
    assert table["symbol"].to_list() == ["ESZ4", "ESH5"]  # outrights that traded, nearest expiry first; ESM5 did not


def test_rth_volume_measures_but_never_chooses():
    """ESZ4 led overnight; ESH5 out-trades it in RTH: ESZ4 stays the front month, flagged."""
    table = choose_front_month(volumes([(2, 600, 450), (1, 400, 550)]), SYMBOLS, ROLL_EVE, volume_source="trades")
    assert front_symbol(table) == "ESZ4"
    assert table["dominance"][0] == pytest.approx(0.45)
    assert table["roll_contaminated"].all()
    assert table.filter(pl.col("symbol") == "ESH5")["share"].item() == pytest.approx(0.55)


def test_an_overnight_tie_goes_to_the_nearer_expiry():
    """ESH5 has the lower instrument id, sorts first alphabetically and has more RTH volume: ESZ4 still wins."""
    table = choose_front_month(volumes([(1, 500, 900), (2, 500, 100)]), SYMBOLS, ROLL_EVE, volume_source="trades")
    assert front_symbol(table) == "ESZ4"
    assert table["dominance"][0] == pytest.approx(0.1) and table["roll_contaminated"][0]


@pytest.mark.parametrize("session,front", [(ROLL_EVE, "ESZ4"), (ROLL_DAY, "ESH5"), (dt.date(2024, 12, 13), "ESH5")])
def test_without_overnight_volume_the_roll_calendar_chooses(session, front):
    """No outright traded overnight: the nearest expiry before its roll date (Thu 2024-12-12), then the next one."""
    table = choose_front_month(volumes([(2, 0, 300), (1, 0, 700), (3, 50, 10)]), SYMBOLS, session, volume_source="ohlcv-1m")
    assert front_symbol(table) == front
    assert table["chosen_by"].unique().to_list() == [CHOSEN_BY_ROLL_CALENDAR]
    assert table["dominance"][0] == pytest.approx(0.3 if front == "ESZ4" else 0.7)


def test_the_calendar_choice_appears_even_when_it_did_not_trade():
    table = choose_front_month(volumes([(6, 0, 100)]), SYMBOLS, ROLL_DAY, volume_source="trades")
    assert front_symbol(table) == "ESH5" and table["dominance"][0] == 0.0 and table["roll_contaminated"][0]
    assert table.filter("is_front")["rth_volume"].item() == 0


def test_no_outright_volume_or_nothing_listed_is_an_error():
    with pytest.raises(NoFrontMonthError, match="RTH"):
        choose_front_month(volumes([(3, 10, 10), (2, 10, 0)]), SYMBOLS, ROLL_EVE, volume_source="trades")
    with pytest.raises(NoFrontMonthError, match="roll date"):  # only ESZ4 listed, after its roll date
        choose_front_month(volumes([(2, 0, 10)]), {2: "ESZ4"}, ROLL_DAY, volume_source="trades")


def test_session_volume_splits_at_the_open_and_stops_at_the_close():
    """A bar is stamped with its open: the 09:29 bar closes at 09:30 and is known at the open."""
    window = session_window(ROLL_EVE)
    minute = 60 * 1_000_000_000
    bars = pl.DataFrame({
        "ts_event": [window.globex_open_ns, window.rth_open_ns - minute, window.rth_open_ns, window.close_ns - minute,
                     window.close_ns, window.rth_open_ns - minute],
        "instrument_id": [2, 2, 2, 2, 2, 1],
        "volume": [5, 7, 11, 13, 1_000, 3],
    })
    out = session_volume(bars, "volume", rth_open_ns=window.rth_open_ns, close_ns=window.close_ns).sort("instrument_id")
    assert out.rows() == [(1, 3, 0), (2, 12, 24)]


def test_real_2013_sessions_select_esz3_from_their_overnight(fixtures):
    source = LocalDbnSource(fixtures / "real-es-ohlcv-1m")
    for day in (dt.date(2013, 10, 7), dt.date(2013, 10, 8), dt.date(2013, 10, 9), dt.date(2013, 10, 10)):
        files = source.acquire(day)
        volume, schema = session_volume_by_instrument(files, day, chunk_records=500)
        table = choose_front_month(volume, futures_symbols(files), day, volume_source=schema)
        assert schema == "ohlcv-1m"
        assert front_symbol(table) == "ESZ3" and table["chosen_by"][0] == CHOSEN_BY_OVERNIGHT_VOLUME
        front = table.filter("is_front")
        assert front["overnight_volume"].item() > 50_000 and front["expiry"].item() == dt.date(2013, 12, 20)
        assert table["dominance"][0] > 0.9


def test_an_overnight_without_rth_is_an_empty_session(fixtures):
    """2013-10-08 from the 20131007 file alone: its 18:00–20:00 ET overnight bars, nothing in RTH."""
    day = dt.date(2013, 10, 8)
    files = SessionFiles(session=day, source="test",
                         files={(FUTURES, "ohlcv-1m"): (fixtures / "real-es-ohlcv-1m" / "glbx-mdp3-20131007.ohlcv-1m.dbn.zst",)})
    with pytest.raises(NoFrontMonthError, match="during RTH"):
        session_volume_by_instrument(files, day, chunk_records=500)
