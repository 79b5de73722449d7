"""Bad input through Dagster: a truncated file, an empty day and a holiday never leave a partial partition."""

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
    # The cut file's time range is unreadable, so the source skips it with a warning naming it,
    # and the session it would have filled fails as empty: one clear error, for that day only.
    assert any("2013-10-08" in m and "empty session" in m for m in failures(result)), failures(result)
    assert not any("2013-10-07 →" in m for m in failures(result))
    lake = Lake(tmp_path / "lake")
    # The good session's partitions of the failing step are written; downstream steps wait for a re-run.
    assert lake.has_partition("bronze", "front_month_contract", "2013-10-07")
    for layer, table in (("bronze", "futures_ohlcv_1m"), ("bronze", "front_month_contract"), ("silver", "bars_1m")):
        assert not lake.has_partition(layer, table, "2013-10-08"), f"{layer}/{table} half-written for the bad day"
    leftovers = [p for p in (tmp_path / "lake").rglob(".tmp-*")]
    assert leftovers == []


def test_a_session_without_files_fails_its_blocking_check_and_stops_downstream(fixtures, tmp_path):
    defs = build_definitions(resources_for(tmp_path, source="local", local_dir=str(fixtures / "real-es-ohlcv-1m")))
    with dg.instance_for_test() as instance:
        result = run_range(defs, "2013-10-14", "2013-10-14", instance)  # no file covers this session
        checks = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    raw_check = checks.get(("raw/dbn_files", "HAS_FILES"))
    lake = Lake(tmp_path / "lake")
    if raw_check is not None:  # the manifest was written (empty) and the blocking check flagged it
        assert not raw_check.passed
        assert "2013-10-14" in str(raw_check.metadata["sessions_without_futures_data"].value)
    else:  # or the source refused the day outright, naming it
        assert any("2013-10-14" in m for m in failures(result)), failures(result)
    assert not result.success
    assert not lake.has_partition("bronze", "futures_ohlcv_1m", "2013-10-14")
    assert not lake.has_partition("silver", "events", "2013-10-14")


def test_holidays_and_weekends_are_not_partitions():
    keys = set(trading_sessions_partitions.get_partition_keys())
    assert "2013-12-25" not in keys and "2013-10-12" not in keys and "2013-10-11" in keys
