"""Pentaview assets on the two-session tiny synthetic lake: as-of stats, streams, alerts, report, CLI, views."""

import json

import dagster as dg
import duckdb
import polars as pl
import pytest
from click.testing import CliRunner

from spymaster_assets.cli import main as cli
from spymaster_assets.gold.streams import stream_assets, stream_report_assets
from spymaster_assets.lake import Lake
from spymaster_assets.lib.stream_alerts import ALERT_NAMES
from spymaster_assets.lib.streams import STREAM_COLUMNS, streams_schema
from spymaster_assets.ml import projections as M
from spymaster_assets_tests.conftest import SYNTHETIC_SESSIONS
from spymaster_assets_tests.helpers import RANGE_END, RANGE_START, resources_for

pytestmark = pytest.mark.slow
FIRST, SECOND = SYNTHETIC_SESSIONS


@pytest.fixture(scope="module")
def lake(synthetic_home) -> Lake:
    return Lake(synthetic_home / "lake")


def test_three_assets_materialize_over_the_range_and_report(synthetic_home, lake):
    resources = resources_for(synthetic_home, source="synthetic", synthetic_scale="tiny")
    needed = {k: resources[k] for k in ("lake", "settings")}
    with dg.instance_for_test() as instance:
        result = dg.materialize(stream_assets, resources=needed, instance=instance, tags={RANGE_START: FIRST, RANGE_END: SECOND})
        assert result.success
        assert all(e.passed for e in result.get_asset_check_evaluations())  # strictly-before and bounds checks
        report_run = dg.materialize(stream_report_assets, resources={"lake": resources["lake"]}, instance=instance)
        assert report_run.success

    # As of D: the first session has no earlier state, the second is normalized by the first only.
    assert lake.file_metadata("gold", "stream_normalization", FIRST)["fitted_on_sessions"] == ""
    assert lake.file_metadata("gold", "stream_normalization", SECOND)["fitted_on_sessions"] == FIRST
    stats = lake.read("gold", "stream_normalization", SECOND)
    assert stats.filter(pl.col("stratum") == "ALL")["scale"].min() > 0

    state = lake.read("silver", "state", SECOND)
    streams = lake.read("gold", "streams", SECOND)
    assert streams.height == state.height and list(streams.schema) == list(streams_schema())
    for column in STREAM_COLUMNS:  # T3 session with history: every stream present and bounded
        assert streams[column].null_count() == 0 and streams[column].abs().max() <= 1.0, column
    first = lake.read("gold", "streams", FIRST)  # no earlier session: nothing to normalize with
    assert first["sigma_f"].null_count() == first.height and first["sigma_s"].null_count() < first.height

    alerts = lake.read("gold", "alerts", SECOND)
    assert set(alerts["alert"].unique().to_list()) <= set(ALERT_NAMES) and alerts["onset"].sum() > 0
    assert alerts["confidence"].is_between(0.0, 1.0).all()

    # Projections as of the second session (built by the whole graph's run): its retrain day has too
    # little history, and the models and the empty projections say so.
    meta = M.read_meta(lake, SECOND)
    assert meta["status"] == M.NOT_ENOUGH_HISTORY and meta["streams"] == [] and "insufficient history" in meta["note"]
    assert not M.load_projectors(lake, SECOND)
    assert lake.read("ml", "projections", SECOND).height == 0

    report = json.loads((lake.root / "reports" / "stream_alerts" / "report.json").read_text())
    assert report["sessions"] == 2 and {a["alert"] for a in report["alerts"]} == set(ALERT_NAMES)
    fired = [a for a in report["alerts"] if a["n_onsets"]]
    assert fired and all(0.0 <= a["hit_rate"] <= 1.0 and 0.0 <= a["base_rate"] <= 1.0 for a in fired)
    assert {e["side"] for e in report["exit_actions"]} == {"LONG", "SHORT"}
    assert (lake.root / "reports" / "stream_alerts" / "streams.png").stat().st_size > 10_000


def test_streams_cli_prints_bars_alerts_and_exit(synthetic_home, lake, monkeypatch):
    monkeypatch.setenv("SPYMASTER_HOME", str(synthetic_home))
    runner = CliRunner()
    out = runner.invoke(cli, ["streams", "--date", SECOND, "--level", "PM_HIGH", "--at", "10:30", "--json"])
    assert out.exit_code == 0, out.output
    answer = json.loads(out.stdout)
    assert answer["time_et"] == "10:30:00" and len(answer["bars"]) == 6
    assert answer["exit"]["LONG"]["score"] == pytest.approx(-answer["exit"]["SHORT"]["score"])
    assert answer["exit"]["LONG"]["action"] in ("HOLD_ADD", "HOLD_TRAIL", "REDUCE", "EXIT")
    text = runner.invoke(cli, ["streams", "--date", SECOND, "--level", "PM_HIGH", "--at", "10:30"])
    assert text.exit_code == 0 and "exit LONG" in text.output and "alerts:" in text.output
    assert "projection: none (insufficient history" in text.output
    early = runner.invoke(cli, ["streams", "--date", SECOND, "--level", "OR_HIGH", "--at", "09:31"])
    assert early.exit_code != 0 and "OR_HIGH has no stream bar" in early.output


def test_lake_views_include_streams_and_alerts(synthetic_home):
    with duckdb.connect(str(synthetic_home / "warehouse.duckdb"), read_only=True) as con:
        views = {row[0] for row in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
    assert {"gold_streams", "gold_alerts", "gold_stream_normalization", "ml_projections"} <= views
