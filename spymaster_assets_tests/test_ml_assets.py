"""The break_model asset: trains, logs to MLflow, writes fold metrics, promotes only on improvement."""

import datetime as dt
import json

import dagster as dg
import numpy as np
import polars as pl
import pytest

from spymaster_assets.lake import Lake
from spymaster_assets.lib.calendar import trading_sessions
from spymaster_assets.lib.episodes import feature_set
from spymaster_assets.lib.mlflow_tracking import load_break_model, serving_run_id
from spymaster_assets.ml.analyses import analysis_assets
from spymaster_assets.ml.assets import FOLDS_TABLE, break_model
from spymaster_assets.ml.serving import explain_setups
from spymaster_assets.ml.training import labelled_episodes, training_set
from spymaster_assets_tests.helpers import resources_for
from spymaster_assets_tests.test_gold_retrieval import fake_episodes

pytestmark = pytest.mark.slow
SESSIONS = trading_sessions(dt.date(2024, 5, 1), dt.date(2024, 5, 31))[:12]


def planted(session: dt.date, rng: np.random.Generator) -> pl.DataFrame:
    """Random T0 episodes whose BREAK odds rise with approach_velocity (a learnable signal)."""
    ep = fake_episodes(session, 40, "T0", rng)
    speed = ep["approach_velocity"].to_numpy()
    p = 1 / (1 + np.exp(-2.0 * speed))
    labels = np.where(rng.random(ep.height) < p, "BREAK", "REJECT")
    open_ns = int(dt.datetime(session.year, session.month, session.day, 14, 30, tzinfo=dt.timezone.utc).timestamp() * 1e9)
    ts = open_ns + np.arange(ep.height, dtype=np.int64) * 240 * 10**9
    return ep.with_columns(pl.Series("label", labels), pl.Series("ts_ns", ts), pl.Series("label_end_ns", ts + 480 * 10**9))


def test_break_model_trains_logs_and_promotes_only_on_improvement(tmp_path):
    lake = Lake(tmp_path / "lake")
    rng = np.random.default_rng(11)
    for session in SESSIONS:
        lake.write_frame("gold", "episodes", session, planted(session, rng))
    resources = resources_for(tmp_path, source="local", local_dir=str(tmp_path))
    needed = {k: resources[k] for k in ("lake", "mlflow", "settings", "market_data")}

    first = dg.materialize([break_model], resources=needed)
    assert first.success
    meta = first.asset_materializations_for_node("ml__break_model")[0].metadata
    assert meta["trained"].value is True and meta["promoted_to_serving"].value is True
    assert meta["wf_auc"].value > 0.7  # the planted signal is found out of fold
    assert meta["wf_cal_brier_skill"].value > 0.05  # and clearly beats the base rate
    run_id = meta["mlflow_run_id"].value
    assert serving_run_id(tmp_path) == run_id

    folds = pl.concat([lake.read("ml", FOLDS_TABLE, d) for d in SESSIONS if lake.has_partition("ml", FOLDS_TABLE, d)])
    assert set(folds["scheme"]) == {"walk_forward", "leave_one_day_out"} and set(folds["run_id"]) == {run_id}
    assert folds.filter(pl.col("scheme") == "walk_forward")["test_session"].min() > SESSIONS[4]

    # Same data, same config: an equal model is not an improvement, so serving stays put.
    second = dg.materialize([break_model], resources=needed)
    meta2 = second.asset_materializations_for_node("ml__break_model")[0].metadata
    assert meta2["promoted_to_serving"].value is False and serving_run_id(tmp_path) == run_id

    # The served model explains with registry driver names, and contributions add up.
    predictor = load_break_model(run_id, tmp_path)
    data = training_set(labelled_episodes(lake))
    signal = explain_setups(predictor, data.episodes[:1], data.episodes)[0]
    names = {d.driver for d in feature_set("T0")}
    assert {d["name"] for side in ("break", "reject") for d in signal["drivers"][side]} <= names
    contributions = predictor.contributions(data.X[:1])
    raw = predictor.predict(data.X[:1])["raw_score"]
    np.testing.assert_allclose(contributions.sum(axis=1), raw, rtol=1e-9)

    # The analyses read the held-out predictions and episodes and log a run each.
    reports = dg.materialize(analysis_assets, resources={k: needed[k] for k in ("lake", "mlflow")})
    assert reports.success
    sections = {"segment_base_rates": "by_level_kind_direction_bucket", "level_specificity": "model_by_level_kind",
                "time_stratification": "global_model_by_bucket", "feature_interactions": "hypothesised"}
    for name, section in sections.items():
        report = json.loads((tmp_path / "lake" / "reports" / name / "report.json").read_text())
        assert report[section], name
    interactions = json.loads((tmp_path / "lake" / "reports" / "feature_interactions" / "report.json").read_text())
    assert "approach_velocity" in interactions["candidates"]  # the planted driver is found first


def test_break_model_waits_for_enough_sessions(tmp_path):
    lake = Lake(tmp_path / "lake")
    rng = np.random.default_rng(1)
    for session in SESSIONS[:3]:
        lake.write_frame("gold", "episodes", session, planted(session, rng))
    resources = resources_for(tmp_path, source="local", local_dir=str(tmp_path))
    result = dg.materialize([break_model], resources={k: resources[k] for k in ("lake", "mlflow", "settings", "market_data")})
    meta = result.asset_materializations_for_node("ml__break_model")[0].metadata
    assert meta["trained"].value is False and "3 labelled sessions" in meta["reason"].value
    assert not (tmp_path / "mlflow.db").exists()
