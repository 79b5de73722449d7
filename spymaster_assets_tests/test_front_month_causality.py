"""The front month is chosen before the open: afternoon volume cannot change a morning value.

The synthetic market rolls ESZ4 → ESH5 (roll date Thu 2024-12-12). Its roll eve, 2024-12-11,
is the roll-week session with the smallest front-month dominance (0.44: ESH5 led the
overnight, ESZ4 leads RTH with 56%). The former whole-session rule chose ESZ4 there, and
tripling ESH5's sizes after 10:47 ET alone was enough to make it choose ESH5 — changing
every state row, level and anchor before 10:47. Here the session is built twice through the
real bronze and silver assets — from the simulator's DBN files and from a copy whose ESH5
trade sizes, book-print sizes and bar volumes after t are tripled — and every value known at
t must be identical.
"""

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import zstandard as zstd

from spymaster_assets.bronze.futures import futures_assets
from spymaster_assets.bronze.options import options_assets
from spymaster_assets.bronze.raw import raw_dbn_files
from spymaster_assets.lake import Lake
from spymaster_assets.lib.calendar import et_to_ns
from spymaster_assets.lib.dbn_decode import instrument_symbols
from spymaster_assets.silver.assets import silver_assets
from spymaster_assets.synthetic import SyntheticConfig, generate_session
from spymaster_assets.synthetic.dbn_writer import RECORD_DTYPES, DbnWriter
from spymaster_assets.synthetic.market import session_dir, session_paths
from spymaster_assets_tests.helpers import resources_for

pytestmark = pytest.mark.slow

ROLL_EVE = dt.date(2024, 12, 11)
NEXT_CONTRACT = "ESH5"
T_NS = et_to_ns(ROLL_EVE, dt.time(10, 47))
FACTOR = 3
MINUTE_NS = 60 * 1_000_000_000
# size field per futures schema, and when a record stops being known at t (a bar is stamped with its open)
PERTURBED = {"trades": ("size", 0), "mbp-10": ("size", 0), "ohlcv-1m": ("volume", MINUTE_NS)}


def scale_sizes_after(path: Path, schema: str, instrument_id: int, t_ns: int, factor: int) -> int:
    """Rewrite a synthetic DBN file with one instrument's sizes multiplied for records not known at t."""
    with path.open("rb") as compressed:
        raw = zstd.ZstdDecompressor().stream_reader(compressed).read()
    header_len = 8 + int.from_bytes(raw[4:8], "little")  # b"DBN" + version, u32 metadata length, metadata
    records = np.frombuffer(raw[header_len:], dtype=RECORD_DTYPES[schema]).copy()
    field, known_after = PERTURBED[schema]
    later = (records["instrument_id"] == instrument_id) & (records["ts_event"].astype(np.int64) + known_after > t_ns)
    records[field][later] *= factor
    with DbnWriter(path, schema, raw[:header_len]) as writer:
        writer.write(records)
    return int(later.sum())


def build_bronze_and_silver(local_dir: Path, home: Path) -> Lake:
    """raw/dbn_files → bronze → silver for the roll eve, from the DBN files under `local_dir`."""
    result = dg.materialize(
        [raw_dbn_files, *futures_assets, *options_assets, *silver_assets],
        partition_key=ROLL_EVE.isoformat(),
        resources=resources_for(home, source="local", local_dir=str(local_dir)),
        raise_on_error=False,
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return Lake(home / "lake")


@pytest.fixture(scope="module")
def lakes(tmp_path_factory) -> tuple[Lake, Lake]:
    root = tmp_path_factory.mktemp("roll_eve")
    generate_session(ROLL_EVE, root / "synthetic", SyntheticConfig(seed=7, scale="tiny"))
    original = session_dir(root / "synthetic", ROLL_EVE)
    perturbed = root / "perturbed"
    shutil.copytree(original, perturbed)
    paths = {schema: perturbed / path.relative_to(original)
             for (venue, schema), path in session_paths(root / "synthetic", ROLL_EVE).items()
             if venue == "futures" and schema in PERTURBED}
    ids = {symbol: iid for iid, symbol in instrument_symbols([paths["trades"]]).items()}
    scaled = {schema: scale_sizes_after(path, schema, ids[NEXT_CONTRACT], T_NS, FACTOR) for schema, path in paths.items()}
    assert all(count > 0 for count in scaled.values()), scaled
    return (build_bronze_and_silver(original, root / "home_original"),
            build_bronze_and_silver(perturbed, root / "home_perturbed"))


def test_the_perturbation_would_have_flipped_a_whole_session_choice(lakes):
    """The premise: a roll-contaminated session on which afternoon volume reverses the RTH ranking."""
    original, perturbed = (lake.read("bronze", "front_month_contract", ROLL_EVE) for lake in lakes)
    rth_leader = [table.sort("rth_volume", descending=True)["symbol"][0] for table in (original, perturbed)]
    assert rth_leader == ["ESZ4", NEXT_CONTRACT]
    assert original["roll_contaminated"].all()
    assert original["dominance"][0] == pytest.approx(0.44, abs=0.02)
    assert perturbed["dominance"][0] > 0.6  # dominance is measured after the fact, so it may move


def test_the_chosen_contract_does_not_depend_on_volume_after_t(lakes):
    known_before_open = ["symbol", "instrument_id", "expiry", "overnight_volume", "is_front", "chosen_by"]
    original, perturbed = (lake.read("bronze", "front_month_contract", ROLL_EVE).select(known_before_open) for lake in lakes)
    assert original.equals(perturbed)
    assert original.filter("is_front")["symbol"].item() == NEXT_CONTRACT
    assert original["chosen_by"].unique().to_list() == ["overnight_volume"]


TABLES_AT_T = {  # table → which rows are known at t (labels look forward by definition and are left out)
    ("bronze", "futures_trades"): pl.col("ts_event") <= T_NS,
    ("bronze", "futures_mbp10"): pl.col("ts_event") <= T_NS,
    ("bronze", "futures_ohlcv_1m"): pl.col("ts_event") + MINUTE_NS <= T_NS,
    ("bronze", "options_definitions"): pl.lit(True),
    ("bronze", "options_open_interest"): pl.lit(True),
    ("bronze", "options_trades"): pl.col("ts_event") <= T_NS,
    ("bronze", "options_mbp1"): pl.col("ts_event") <= T_NS,
    ("silver", "bars_10s"): pl.col("bar_end_ns") <= T_NS,
    ("silver", "bars_1m"): pl.col("bar_end_ns") <= T_NS,
    ("silver", "bars_2m"): pl.col("bar_end_ns") <= T_NS,
    ("silver", "levels"): pl.col("known_at_ns") <= T_NS,
    ("silver", "state"): pl.col("t_ns") <= T_NS,
    ("silver", "events"): pl.col("ts_ns") <= T_NS,
}


@pytest.mark.parametrize("layer,table", list(TABLES_AT_T))
def test_every_bronze_and_silver_value_known_at_t_is_unchanged(lakes, layer, table):
    known = TABLES_AT_T[(layer, table)]
    original, perturbed = (lake.read(layer, table, ROLL_EVE).filter(known) for lake in lakes)
    assert original.height > 0
    assert original.equals(perturbed)


@pytest.mark.parametrize("layer,table,column", [("bronze", "futures_trades", "size"), ("silver", "bars_1m", "volume"),
                                                ("silver", "state", None)])
def test_the_perturbation_reaches_the_values_after_t(lakes, layer, table, column):
    """The comparison above is not vacuous: the front month's later records did change."""
    time_column = {"futures_trades": "ts_event", "bars_1m": "bar_end_ns", "state": "t_ns"}[table]
    original, perturbed = (lake.read(layer, table, ROLL_EVE).filter(pl.col(time_column) > T_NS) for lake in lakes)
    if column is not None:
        original, perturbed = original[column], perturbed[column]
    assert not original.equals(perturbed)
