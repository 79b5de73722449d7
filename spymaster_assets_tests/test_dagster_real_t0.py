"""Materialize bronze → silver through Dagster on the real 2013 ES 1-minute bars (tier T0)."""

import dagster as dg
import duckdb
import polars as pl
import pytest

from spymaster_assets.definitions import build_definitions
from spymaster_assets.lake import Lake
from spymaster_assets_tests.helpers import build_warehouse, run_range
from spymaster_assets_tests.helpers import resources_for as resources

pytestmark = pytest.mark.slow


def test_real_2013_bars_materialize_as_tier_t0(fixtures, tmp_path):
    defs = build_definitions(resources(tmp_path, source="local", local_dir=str(fixtures / "real-es-ohlcv-1m")))
    with dg.instance_for_test() as instance:
        result = run_range(defs, "2013-10-07", "2013-10-10", instance)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        build_warehouse(defs, instance)
        checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert checks[("bronze/futures_ohlcv_1m", "NON_EMPTY_RTH")]
    assert checks[("bronze/front_month_contract", "FRONT_MONTH_DOMINANCE")]
    lake = Lake(tmp_path / "lake")
    for day in ("2013-10-07", "2013-10-08", "2013-10-09", "2013-10-10"):
        front = lake.read("bronze", "front_month_contract", day).filter("is_front")
        assert front["symbol"].item() == "ESZ3" and front["volume_source"].item() == "ohlcv-1m"
        bars = lake.read("bronze", "futures_ohlcv_1m", day)
        assert set(bars["symbol"]) == {"ESZ3"} and bars.height > 300
        assert lake.read("bronze", "futures_mbp10", day).height == 0  # T0: absent schema → empty, typed
        assert lake.read("raw", "dbn_files", day)["schema"].unique().to_list() == ["ohlcv-1m"]
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        per_day = con.sql(
            "SELECT date, count(*) AS bars, min(symbol) AS symbol FROM bronze_futures_ohlcv_1m GROUP BY date ORDER BY date"
        ).fetchall()
    assert [str(day) for day, _, _ in per_day] == ["2013-10-07", "2013-10-08", "2013-10-09", "2013-10-10"]
    assert all(symbol == "ESZ3" for _, _, symbol in per_day)


def independent_levels(fixtures, day: str) -> dict[str, float]:
    """PM/OR levels straight from the raw DBN bars with pandas, sharing no project code."""
    import databento as db
    import pandas as pd

    frames = [db.DBNStore.from_file(p).to_df(map_symbols=True)
              for p in sorted((fixtures / "real-es-ohlcv-1m").glob("*.dbn.zst"))]
    bars = pd.concat(frames)
    bars = bars[bars["symbol"] == "ESZ3"]
    et = bars.index.tz_convert("America/New_York")
    bars = bars[et.date == pd.Timestamp(day).date()]
    et = bars.index.tz_convert("America/New_York")
    minutes = et.hour * 60 + et.minute
    pm = bars[(minutes >= 4 * 60) & (minutes < 9 * 60 + 30)]
    opening = bars[(minutes >= 9 * 60 + 30) & (minutes < 9 * 60 + 45)]
    return {"PM_HIGH": pm["high"].max(), "PM_LOW": pm["low"].min(),
            "OR_HIGH": opening["high"].max(), "OR_LOW": opening["low"].min()}


def test_real_2013_silver_levels_events_and_labels(fixtures, tmp_path):
    defs = build_definitions(resources(tmp_path, source="local", local_dir=str(fixtures / "real-es-ohlcv-1m")))
    with dg.instance_for_test() as instance:
        result = run_range(defs, "2013-10-07", "2013-10-10", instance)
        assert result.success
        failed = [(e.asset_key.to_user_string(), e.check_name) for e in result.get_asset_check_evaluations() if not e.passed]
    assert failed == []
    lake = Lake(tmp_path / "lake")
    for day in ("2013-10-07", "2013-10-08", "2013-10-09", "2013-10-10"):
        levels = lake.read("silver", "levels", day)
        static = dict(zip(levels["level_kind"], levels["price"]))
        for kind, expected in independent_levels(fixtures, day).items():
            assert static[kind] == pytest.approx(expected), (day, kind)
        assert {"SMA_90", "EMA_20"} <= set(levels["level_kind"])
        atr = lake.read("silver", "bars_1m", day)["atr"].drop_nulls()
        assert 0.25 < atr.median() < 15
        events = lake.read("silver", "events", day)
        labels = lake.read("silver", "labels", day)
        assert 5 <= events.height <= 60 and labels.height == events.height
        assert set(labels["label"]) <= {"BREAK", "REJECT", "CHOP"} and labels["label"].n_unique() >= 2
        state = lake.read("silver", "state", day)
        assert state["tier"].unique().to_list() == ["T0"]
        assert state["ofi_60s"].is_null().all() and state["buy_vol_60s"].is_null().all()  # absent tiers are null
        assert state["d"].is_not_null().all()
        # dir_sign is the approach side: below (or at) the level → UP, except on a row whose last
        # bar traded into the touch band from the other side (it has not left the band yet).
        beyond = state.filter((state["d"] <= 0) != (state["dir_sign"] == 1))
        band_pt = pl.max_horizontal(pl.lit(0.25), 0.25 * pl.col("atr"))
        assert beyond.select((pl.col("bar_reach_toward_atr") * pl.col("atr") >= -band_pt - 1e-9).all()).item()
        assert (beyond["d_atr_toward"] >= 0).all() and beyond.height < state.height // 10
