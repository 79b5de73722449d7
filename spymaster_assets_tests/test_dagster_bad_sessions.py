"""Bad input in one synthetic session, through Dagster: every case ends in a clear error, a
flagged partition or a quarantine — never a silent downgrade, and nothing half-written.

Each test copies tiny synthetic sessions (genuine DBN files in Databento's batch layout) into a
local DBN directory, breaks one file the way real data breaks, and materializes raw → bronze
(→ silver) from it with the local source.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import zstandard

from spymaster_assets.bronze.futures import futures_assets
from spymaster_assets.bronze.options import options_assets
from spymaster_assets.bronze.raw import raw_dbn_files
from spymaster_assets.lake import Lake, QuarantinedPartition
from spymaster_assets.lib.calendar import session_window
from spymaster_assets.lib.dbn_decode import UNDEF_PRICE
from spymaster_assets.resources import PipelineSettings
from spymaster_assets.silver.assets import silver_assets
from spymaster_assets.synthetic import SyntheticConfig, generate_session, session_paths
from spymaster_assets.synthetic.dbn_writer import RECORD_DTYPES
from spymaster_assets_tests.helpers import RANGE_END, RANGE_START, resources_for

pytestmark = pytest.mark.slow

DAYS = ("2024-12-09", "2024-12-10", "2024-12-11")
DAY = DAYS[0]
BRONZE = [raw_dbn_files, *futures_assets, *options_assets]
SILVER = [*BRONZE, *silver_assets]
PRICE_SCALE = 1_000_000_000


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic_raw")
    for day in DAYS:
        generate_session(dt.date.fromisoformat(day), root, SyntheticConfig(scale="tiny"))
    return root


@pytest.fixture
def local_dir(synthetic_root, tmp_path) -> Path:
    """A writable copy of the synthetic sessions, to break."""
    target = tmp_path / "dbn"
    shutil.copytree(synthetic_root, target)
    return target


def path_of(local: Path, day: str, schema: str, venue: str = "futures") -> Path:
    session = dt.date.fromisoformat(day)
    relative = session_paths(Path("."), session)[(venue, schema)]
    return local / relative


def rewrite_records(path: Path, schema: str, change) -> None:
    """Decode a DBN file's records as their wire dtype, let `change` edit them, write them back
    under the same metadata (what a buggy capture, copy or merge would produce)."""
    with open(path, "rb") as handle:
        data = zstandard.ZstdDecompressor().stream_reader(handle).read()
    header_len = 8 + int.from_bytes(data[4:8], "little")
    records = np.frombuffer(data[header_len:], dtype=RECORD_DTYPES[schema]).copy()
    records = change(records)
    path.write_bytes(zstandard.ZstdCompressor().compress(data[:header_len] + records.tobytes()))


def front_rth(records: np.ndarray, day: str) -> np.ndarray:
    """Indices of the busiest instrument's records in RTH (the front month)."""
    window = session_window(dt.date.fromisoformat(day))
    rth = (records["ts_event"] >= window.rth_open_ns) & (records["ts_event"] < window.close_ns)
    ids, counts = np.unique(records["instrument_id"][rth], return_counts=True)
    return np.flatnonzero(rth & (records["instrument_id"] == ids[np.argmax(counts)]))


def materialize(assets, tmp_path: Path, local: Path, first: str, last: str | None = None,
                settings: PipelineSettings | None = None, selection=None) -> dg.ExecuteInProcessResult:
    resources = resources_for(tmp_path, source="local", local_dir=str(local))
    resources["settings"] = settings or PipelineSettings()
    with dg.instance_for_test() as instance:
        return dg.materialize(assets, resources=resources, instance=instance, selection=selection,
                              tags={RANGE_START: first, RANGE_END: last or first}, raise_on_error=False)


def failures(result: dg.ExecuteInProcessResult) -> str:
    texts = []
    for event in result.all_events:
        if event.is_failure:
            error = getattr(event.event_specific_data, "error", None)
            texts.append(f"{event.message or ''} {error.message if error else ''}")
    return "\n".join(texts)


def checks(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}


def no_staging_left(tmp_path: Path) -> bool:
    return not [p for p in (tmp_path / "lake").rglob(".tmp-*")]


# --- a file present but unusable: the session fails naming it, or records the tier it reached ---------


def _replace_mbp10(local: Path, content: bytes) -> Path:
    target = path_of(local, DAY, "mbp-10")
    target.write_bytes(content)
    return target


@pytest.mark.parametrize(
    ("case", "content", "reason"),
    [
        ("truncated header", lambda mbp10, fixtures: mbp10[:40], "truncated"),
        ("random bytes", lambda mbp10, fixtures: np.random.default_rng(3).bytes(4096), "not a DBN file"),
        ("MBO file", lambda mbp10, fixtures: (fixtures / "databento-format" / "test_data.mbo.dbn.zst").read_bytes(),
         "metadata says schema mbo"),
        ("TBBO file", lambda mbp10, fixtures: (fixtures / "databento-format" / "test_data.tbbo.dbn.zst").read_bytes(),
         "metadata says schema tbbo"),
    ],
)
def test_an_unusable_mbp10_file_fails_its_session_naming_the_file(fixtures, local_dir, tmp_path, case, content, reason):
    original = path_of(local_dir, DAY, "mbp-10").read_bytes()
    broken = _replace_mbp10(local_dir, content(original, fixtures))
    result = materialize(BRONZE, tmp_path, local_dir, DAY)
    assert not result.success
    message = failures(result)
    assert DAY in message and str(broken) in message and reason in message, message
    assert "tier T1 reached, T3 expected" in message, message
    lake = Lake(tmp_path / "lake")
    assert not lake.has_partition("raw", "dbn_files", DAY)  # no manifest: nothing downstream can run on it
    assert not lake.has_partition("bronze", "futures_trades", DAY)
    assert no_staging_left(tmp_path)


def test_allow_tier_downgrade_runs_the_lower_tier_and_flags_it(fixtures, local_dir, tmp_path):
    broken = _replace_mbp10(local_dir, (fixtures / "databento-format" / "test_data.tbbo.dbn.zst").read_bytes())
    result = materialize(BRONZE, tmp_path, local_dir, DAY, settings=PipelineSettings(allow_tier_downgrade=True))
    assert result.success, failures(result)
    tier_check = checks(result)[("raw/dbn_files", "TIER_AS_EXPECTED")]
    assert not tier_check.passed and tier_check.severity == dg.AssetCheckSeverity.WARN
    downgrade = tier_check.metadata["downgraded_sessions"].value[DAY]
    assert downgrade.startswith("tier T1 reached, T3 expected: ") and str(broken) in downgrade and "tbbo" in downgrade
    lake = Lake(tmp_path / "lake")
    meta = lake.file_metadata("raw", "dbn_files", DAY)
    assert (meta["tier"], meta["tier_expected"]) == ("T1", "T3")
    assert lake.read("bronze", "futures_mbp10", DAY).height == 0 and lake.read("bronze", "futures_trades", DAY).height > 0


# --- blocking bronze checks: the partition is quarantined, downstream never runs on it -------------


def _quarantined_by(result, tmp_path, table: str, check: str) -> str:
    evaluation = checks(result)[(f"bronze/{table}", check)]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    lake = Lake(tmp_path / "lake")
    reason = lake.quarantine_reason("bronze", table, DAY)
    assert reason is not None and reason.startswith(check), reason
    assert not lake.has_partition("bronze", table, DAY)
    with pytest.raises(QuarantinedPartition, match=check):
        lake.read("bronze", table, DAY)
    return reason


def test_duplicated_records_quarantine_the_trades(local_dir, tmp_path):
    def duplicate(records):
        rows = front_rth(records, DAY)[:25]
        return np.insert(records, rows + 1, records[rows])  # each copy right after its original: still in order
    rewrite_records(path_of(local_dir, DAY, "trades"), "trades", duplicate)
    result = materialize(SILVER, tmp_path, local_dir, DAY)
    reason = _quarantined_by(result, tmp_path, "futures_trades", "NO_DUPLICATE_RECORDS")
    assert '"duplicated_records": 25' in reason
    assert checks(result)[("bronze/futures_trades", "MONOTONIC_TIMESTAMPS")].passed
    assert not Lake(tmp_path / "lake").has_partition("silver", "bars_1m", DAY)  # blocked downstream


def test_out_of_order_timestamps_quarantine_the_trades(local_dir, tmp_path):
    def swap(records):
        first, second = front_rth(records, DAY)[[10, 200]]
        records[[first, second]] = records[[second, first]]
        return records
    rewrite_records(path_of(local_dir, DAY, "trades"), "trades", swap)
    result = materialize(BRONZE, tmp_path, local_dir, DAY)
    _quarantined_by(result, tmp_path, "futures_trades", "MONOTONIC_TIMESTAMPS")


def test_a_crossed_book_quarantines_the_mbp10(local_dir, tmp_path):
    def cross(records):
        rows = front_rth(records, DAY)[::20]
        both = (records["bid_px_00"][rows] != UNDEF_PRICE) & (records["ask_px_00"][rows] != UNDEF_PRICE)
        rows = rows[both]
        records["bid_px_00"][rows] = records["ask_px_00"][rows] + PRICE_SCALE // 4  # bid one tick above ask
        return records
    rewrite_records(path_of(local_dir, DAY, "mbp-10"), "mbp-10", cross)
    result = materialize(BRONZE, tmp_path, local_dir, DAY)
    _quarantined_by(result, tmp_path, "futures_mbp10", "NO_CROSSED_BOOK")


def test_six_trades_at_price_zero_never_reach_the_atr(local_dir, tmp_path):
    def zero(records):
        records["price"][front_rth(records, DAY)[100:106]] = 0
        return records
    rewrite_records(path_of(local_dir, DAY, "trades"), "trades", zero)
    result = materialize(SILVER, tmp_path, local_dir, DAY)
    assert not result.success
    reason = _quarantined_by(result, tmp_path, "futures_trades", "PRICE_SANITY")
    assert '"non_positive": 6' in reason and '"bad_rows": 6' in reason
    lake = Lake(tmp_path / "lake")
    for table in ("bars_1m", "levels", "events"):
        assert not lake.has_partition("silver", table, DAY), table  # no ATR, no anchor from the zeros
    assert no_staging_left(tmp_path)


def test_an_undefined_trade_price_is_named_not_a_nan(local_dir, tmp_path):
    def undefine(records):
        records["price"][front_rth(records, DAY)[50]] = UNDEF_PRICE
        return records
    rewrite_records(path_of(local_dir, DAY, "trades"), "trades", undefine)
    result = materialize(BRONZE, tmp_path, local_dir, DAY)
    reason = _quarantined_by(result, tmp_path, "futures_trades", "PRICE_SANITY")
    assert '"undefined": 1' in reason


def test_a_later_downstream_only_run_cannot_read_a_quarantined_partition(synthetic_root, local_dir, tmp_path):
    def cross(records):
        rows = front_rth(records, DAY)
        records["bid_px_00"][rows] = records["ask_px_00"][rows] + PRICE_SCALE // 4
        return records
    rewrite_records(path_of(local_dir, DAY, "mbp-10"), "mbp-10", cross)
    first = materialize(BRONZE, tmp_path, local_dir, DAY)
    assert not checks(first)[("bronze/futures_mbp10", "NO_CROSSED_BOOK")].passed
    # A downstream-only run (as a UI "materialize selected" or a stale backfill would make it):
    later = materialize(SILVER, tmp_path, local_dir, DAY, selection=silver_assets)
    assert not later.success
    message = failures(later)
    assert "futures_mbp10 partition 2024-12-09 is quarantined: NO_CROSSED_BOOK" in message, message
    lake = Lake(tmp_path / "lake")
    assert not lake.has_partition("silver", "state", DAY)
    # Rebuilding the partition from repaired data clears the quarantine.
    shutil.copy(path_of(synthetic_root, DAY, "mbp-10"), path_of(local_dir, DAY, "mbp-10"))
    assert materialize(BRONZE, tmp_path, local_dir, DAY).success
    assert lake.quarantine_reason("bronze", "futures_mbp10", DAY) is None
    assert lake.read("bronze", "futures_mbp10", DAY).height > 0


# --- a trading date without data: a flagged, empty partition; the range's good sessions complete --------


def test_a_session_without_rth_data_is_a_flagged_empty_partition(local_dir, tmp_path):
    empty_day = DAYS[1]
    rth_open = session_window(dt.date.fromisoformat(empty_day)).rth_open_ns
    for schema in ("trades", "mbp-10", "ohlcv-1m"):
        rewrite_records(path_of(local_dir, empty_day, schema), schema, lambda r: r[r["ts_event"] < rth_open])
    result = materialize(SILVER, tmp_path, local_dir, DAYS[0], DAYS[-1])
    assert result.success, failures(result)
    found = checks(result)
    has_data = found[("raw/dbn_files", "SESSION_HAS_DATA")]
    assert not has_data.passed and has_data.severity == dg.AssetCheckSeverity.WARN
    assert has_data.metadata["empty_sessions"].value == {empty_day: f"no RTH futures trades or 1-min bars on {empty_day}"}
    rth = found[("bronze/futures_trades", "NON_EMPTY_RTH")]
    assert not rth.passed and rth.severity == dg.AssetCheckSeverity.WARN
    lake = Lake(tmp_path / "lake")
    for table in ("futures_trades", "futures_mbp10", "options_trades"):
        assert lake.read("bronze", table, empty_day).height == 0
    for table in ("bars_1m", "levels", "events", "state", "labels"):
        assert lake.read("silver", table, empty_day).height == 0, table  # typed, empty: no episodes
    for day in (DAYS[0], DAYS[2]):
        assert lake.read("silver", "events", day).height > 0 and lake.read("silver", "labels", day).height > 0
    assert lake.read("silver", "state", DAYS[0]).columns == lake.read("silver", "state", empty_day).columns
