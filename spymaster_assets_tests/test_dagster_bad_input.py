"""Bad input through Dagster: a truncated file fails its session, a day without files is a flagged empty
partition, a holiday is no partition; none leaves a partial partition."""

import shutil

import dagster as dg
import pytest

from spymaster_assets.definitions import build_definitions
from spymaster_assets.lake import Lake
from spymaster_assets.partitions import trading_sessions_partitions
from spymaster_assets_tests.helpers import resources_for, run_range

pytestmark = pytest.mark.slow


def failures(result: dg.ExecuteInProcessResult) -> list[str]:
    """Failure messages with the error text each step raised."""
    texts = []
    for event in result.all_events:
        if event.is_failure:
            error = getattr(event.event_specific_data, "error", None)
            texts.append(f"{event.message or ''} {error.message if error else ''}")
    return texts


def test_truncated_file_fails_only_its_session_and_names_it(fixtures, tmp_path):
    source = tmp_path / "dbn"
    shutil.copytree(fixtures / "real-es-ohlcv-1m", source)
    # Session 2013-10-07 reads the 20131007 file only (no Sunday file); 2013-10-08 also reads 20131008.
    victim = source / "glbx-mdp3-20131008.ohlcv-1m.dbn.zst"
    victim.chmod(0o644)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    (source / "glbx-mdp3-20131009.ohlcv-1m.dbn.zst").unlink()
    (source / "glbx-mdp3-20131010.ohlcv-1m.dbn.zst").unlink()

    defs = build_definitions(resources_for(tmp_path, source="local", local_dir=str(source)))
    with dg.instance_for_test() as instance:
        result = run_range(defs, "2013-10-07", "2013-10-08", instance)
    assert not result.success
    # The cut file's header is gone, but its Databento batch name places it in 2013-10-08: that
    # session fails naming it, although the 20131007 file still gives it its Sunday-evening bars.
    message = "\n".join(failures(result))
    assert "1 of 2 sessions failed: 2013-10-08 → TierDowngradeError: tier T0 reached without the data of" in message
    assert str(victim) in message and "truncated" in message
    lake = Lake(tmp_path / "lake")
    assert lake.has_partition("raw", "dbn_files", "2013-10-07")  # the good session's manifest is written
    for layer, table in (("raw", "dbn_files"), ("bronze", "futures_ohlcv_1m"), ("bronze", "front_month_contract"),
                         ("silver", "bars_1m")):
        assert not lake.has_partition(layer, table, "2013-10-08"), f"{layer}/{table} half-written for the bad day"
    leftovers = [p for p in (tmp_path / "lake").rglob(".tmp-*")]
    assert leftovers == []


def test_a_session_without_files_is_a_flagged_empty_partition(fixtures, tmp_path):
    defs = build_definitions(resources_for(tmp_path, source="local", local_dir=str(fixtures / "real-es-ohlcv-1m")))
    with dg.instance_for_test() as instance:
        result = run_range(defs, "2013-10-14", "2013-10-14", instance)  # a trading date no file covers
        checks = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    assert result.success, failures(result)
    has_data = checks[("raw/dbn_files", "SESSION_HAS_DATA")]
    assert not has_data.passed and has_data.severity == dg.AssetCheckSeverity.WARN
    assert has_data.metadata["empty_sessions"].value == {"2013-10-14": "no futures trades or 1-min bars cover 2013-10-14"}
    lake = Lake(tmp_path / "lake")
    assert lake.read("bronze", "futures_ohlcv_1m", "2013-10-14").height == 0
    assert lake.read("silver", "events", "2013-10-14").height == 0


def test_holidays_and_weekends_are_not_partitions():
    keys = set(trading_sessions_partitions.get_partition_keys())
    assert "2013-12-25" not in keys and "2013-10-12" not in keys and "2013-10-11" in keys
