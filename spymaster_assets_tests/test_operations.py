"""Operations: the new-DBN-files sensor evaluates on a temp raw directory."""

import shutil

import dagster as dg

from spymaster_assets.resources import MarketDataResource
from spymaster_assets.schedules import new_dbn_files_sensor


def evaluate(raw_dir, cursor=None):
    market = MarketDataResource(source="local", raw_root=str(raw_dir.parent / "raw"), local_dir=str(raw_dir))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"market_data": market})
        result = new_dbn_files_sensor(context)
        return result, context.cursor


def test_new_files_launch_their_sessions_once(fixtures, tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    shutil.copy(fixtures / "real-es-ohlcv-1m" / "glbx-mdp3-20131008.ohlcv-1m.dbn.zst", drop)
    requests, cursor = evaluate(drop)
    # The file covers 2013-10-08 00:00 UTC → 2013-10-09 00:00 UTC: the 10-08 session and the 10-09
    # session's Globex evening (18:00 ET on the 8th = 22:00 UTC).
    assert sorted(r.partition_key for r in requests) == ["2013-10-08", "2013-10-09"]
    assert len({r.run_key for r in requests}) == 2

    again, _ = evaluate(drop, cursor)
    assert isinstance(again, dg.SkipReason)  # nothing new: nothing launched

    shutil.copy(fixtures / "real-es-ohlcv-1m" / "glbx-mdp3-20131010.ohlcv-1m.dbn.zst", drop)
    more, _ = evaluate(drop, cursor)
    assert sorted(r.partition_key for r in more) == ["2013-10-10", "2013-10-11"]


def test_sensor_skips_unless_the_source_is_a_local_directory(tmp_path):
    market = MarketDataResource(source="synthetic", raw_root=str(tmp_path))
    with dg.instance_for_test() as instance:
        result = new_dbn_files_sensor(dg.build_sensor_context(instance=instance, resources={"market_data": market}))
    assert isinstance(result, dg.SkipReason)
