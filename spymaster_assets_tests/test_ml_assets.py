"""The as-of break model in Dagster: partitions trained only on earlier sessions, retrained on a
cadence and reused in between, each retrain an MLflow run; predictions scored by D's own model;
the walk-forward evaluation and the analyses read those predictions."""

import datetime as dt
import json
import shutil

import dagster as dg
import numpy as np
import polars as pl
import pytest

from spymaster_assets.lake import Lake
from spymaster_assets.lib.calendar import trading_sessions
from spymaster_assets.lib.episodes import feature_set
from spymaster_assets.lib.mlflow_tracking import tracking_uri
from spymaster_assets.ml.analyses import analysis_assets
from spymaster_assets.ml.assets import (
    AS_OF,
    PREDICTION_SCHEMA,
    PREDICTIONS_TABLE,
    break_model,
    break_predictions,
)
from spymaster_assets.ml.evaluation import evaluation_assets
from spymaster_assets.ml.model_store import MODEL_FILES, load_model, model_dir, read_summary
from spymaster_assets.ml.serving import explain_setups
from spymaster_assets.ml.training import read_window, retrain_session
from spymaster_assets_tests.helpers import RANGE_START, resources_for
from spymaster_assets_tests.test_gold_retrieval import fake_episodes

pytestmark = pytest.mark.slow
SESSIONS = trading_sessions(dt.date(2024, 5, 1), dt.date(2024, 6, 30))[:16]
RANGE_END = "dagster/asset_partition_range_end"


def planted(session: dt.date, rng: np.random.Generator) -> pl.DataFrame:
    """Random T0 episodes whose BREAK odds rise with approach_velocity (a learnable signal), 10 % CHOP."""
    ep = fake_episodes(session, 40, "T0", rng)
    speed = ep["approach_velocity"].to_numpy()
    p = 1 / (1 + np.exp(-2.0 * speed))
    labels = np.where(rng.random(ep.height) < 0.1, "CHOP", np.where(rng.random(ep.height) < p, "BREAK", "REJECT"))
    open_ns = int(dt.datetime(session.year, session.month, session.day, 13, 30, tzinfo=dt.timezone.utc).timestamp() * 1e9)
    ts = open_ns + np.arange(ep.height, dtype=np.int64) * 240 * 10**9
    return ep.with_columns(pl.Series("label", labels), pl.Series("ts_ns", ts), pl.Series("label_end_ns", ts + 480 * 10**9))


def write_market(lake: Lake, seed: int = 11) -> None:
    """Planted sessions; one episode of the second session has a NaN in a T0 dimension (bad input)."""
    rng = np.random.default_rng(seed)
    for session in SESSIONS:
        episodes = planted(session, rng)
        if session == SESSIONS[1]:
            episodes = episodes.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(float("nan"))
                                             .otherwise(pl.col("d_atr")).alias("d_atr"))
        lake.write_frame("gold", "episodes", session, episodes)


def needed(home, *names):
    resources = resources_for(home, source="local", local_dir=str(home))
    return {k: resources[k] for k in names}


def materialize(home, assets, first, last=None):
    return dg.materialize(assets, resources=needed(home, "lake", "mlflow", "settings"),
                          tags={RANGE_START: str(first), RANGE_END: str(last or first)})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    home = tmp_path_factory.mktemp("ml_home")
    lake = Lake(home / "lake")
    write_market(lake)
    result = materialize(home, [break_model, break_predictions], SESSIONS[0], SESSIONS[-1])
    assert result.success
    return home, lake, result


def summaries(lake: Lake) -> dict[dt.date, dict]:
    return {s: read_summary(lake, s) for s in SESSIONS}


def test_every_model_is_trained_strictly_before_its_date_and_retrained_on_cadence(built):
    home, lake, result = built
    rows = summaries(lake)
    trained = {s: r for s, r in rows.items() if r["status"] != "not_enough_history"}
    assert trained and len(trained) < len(SESSIONS)  # early dates lack history, later ones have a model
    for session, row in rows.items():
        assert row["as_of"] == session and row["trained_for"] == retrain_session(session, AS_OF.retrain_every)
        if row["status"] == "not_enough_history":
            assert not any((model_dir(lake, session) / f).exists() for f in MODEL_FILES)
            assert "labelled sessions" in row["note"]
            continue
        # The stored training range ends before the retrain day, with one session of embargo.
        assert row["trained_on_first"] <= row["trained_on_last"] < row["trained_for"] <= session
        assert SESSIONS.index(row["trained_for"]) - SESSIONS.index(row["trained_on_last"]) == 1 + AS_OF.embargo_sessions
        assert row["n_sessions"] >= AS_OF.min_history_sessions
        # The NaN episode is left out of every window that holds its session, and counted.
        assert row["n_incomplete"] == (1 if row["trained_on_first"] <= SESSIONS[1] <= row["trained_on_last"] else None)
    retrains = {s for s, r in trained.items() if r["status"] == "trained"}
    assert retrains == {s for s in trained if retrain_session(s, AS_OF.retrain_every) == s}
    for session, row in trained.items():
        if row["status"] == "reused":  # a byte copy of the retrain day's model, and says so
            assert row["reused_from"] is not None and row["reused_from"] < session
            for name in MODEL_FILES:
                assert (model_dir(lake, session) / name).read_bytes() == (model_dir(lake, row["reused_from"]) / name).read_bytes()
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"TRAINED_STRICTLY_BEFORE": True, "CLASS_SHARES_MATCH_BASE_RATES": True,
                      "SCORED_BY_AN_EARLIER_MODEL": True}


def test_each_retrain_is_an_mlflow_run_tagged_with_its_partition(built):
    home, lake, result = built
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri(home), registry_uri=tracking_uri(home))
    retrains = {s: r for s, r in summaries(lake).items() if r["status"] == "trained"}
    for session, row in retrains.items():
        run = client.get_run(row["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.tags["dagster/partition"] == session.isoformat()
        assert run.data.tags["spymaster.as_of"] == row["trained_for"].isoformat()
        assert run.data.params["trained_on_last"] == row["trained_on_last"].isoformat()
        stored = {a.path.removeprefix("model/") for a in client.list_artifacts(run.info.run_id, "model")}
        assert {*MODEL_FILES, "lightgbm_binary", "lightgbm_multiclass", "feature_importance.csv", "plots"} == stored
        # The mlflow.lightgbm copy is the booster the lake partition serves.
        booster = mlflow.lightgbm.load_model(f"{run.info.artifact_uri}/model/lightgbm_binary")
        predictor, _, _ = load_model(lake, session)
        X = lake.read("gold", "episodes", session).select(list(predictor.feature_names)).to_numpy()
        np.testing.assert_array_equal(booster.predict(X, raw_score=True), predictor.predict(X)["raw_score"])
    versions = client.search_model_versions("name = 'spymaster_break_model'")
    assert sorted(v.run_id for v in versions) == sorted(r["mlflow_run_id"] for r in retrains.values())
    meta = result.asset_materializations_for_node("ml__break_model")[0].metadata
    per_session = meta["per_session"].value
    some = next(iter(retrains))
    assert per_session[some.isoformat()]["mlflow_run_id"] == retrains[some]["mlflow_run_id"]
    assert "mlflow ui --backend-store-uri" in per_session[some.isoformat()]["mlflow_ui"]


def test_predictions_are_d_episodes_scored_by_d_model(built):
    home, lake, _ = built
    rows = summaries(lake)
    for session, row in rows.items():
        predictions = lake.read("ml", PREDICTIONS_TABLE, session)
        assert dict(predictions.schema) == PREDICTION_SCHEMA
        if row["status"] == "not_enough_history":
            assert predictions.height == 0  # absent, not faked
            continue
        episodes = lake.read("gold", "episodes", session)
        assert predictions["episode_id"].to_list() == episodes["episode_id"].to_list()
        assert (predictions["trained_on_last"] < session).all()
        assert (predictions["model_as_of"] == row["trained_for"]).all()
        total = predictions["p_break"] + predictions["p_reject"] + predictions["p_chop"]
        assert (total - 1.0).abs().max() < 1e-12
        assert ((predictions["p_break"] - predictions["p_break_decisive"] * (1 - predictions["p_chop"])).abs().max()) < 1e-12
        assert predictions["base_break"].unique().to_list() == [row["base_break"]]
        assert predictions["baseline_feature"].unique().to_list() == [row["baseline_feature"]]
        predictor, baseline, _ = load_model(lake, session)
        X = episodes.select(list(predictor.feature_names)).to_numpy()
        np.testing.assert_array_equal(predictions["p_break_decisive"].to_numpy(), predictor.predict(X)["p_break"])
        np.testing.assert_array_equal(predictions["p_break_baseline"].to_numpy(),
                                      baseline.predict(episodes[baseline.feature].to_numpy()))
    # The planted driver is the baseline chosen on every window that has a model.
    assert {r["baseline_feature"] for r in rows.values() if r["baseline_feature"]} == {"approach_velocity"}


def test_d_model_ignores_d_and_later_labels(built, tmp_path):
    home, lake, _ = built
    retrain_day = next(s for s, r in summaries(lake).items() if r["status"] == "trained")
    original = (model_dir(lake, retrain_day) / "binary.txt").read_bytes()

    def rebuilt_after(change) -> bytes:
        other = tmp_path / change.__name__
        store = Lake(other / "lake")
        shutil.copytree(lake.table_dir("gold", "episodes"), store.table_dir("gold", "episodes"))
        for session in SESSIONS:
            if change(session):
                flipped = store.read("gold", "episodes", session).with_columns(
                    pl.col("label").replace({"BREAK": "REJECT", "REJECT": "BREAK"}))
                store.write_frame("gold", "episodes", session, flipped)
        assert materialize(other, [break_model], retrain_day).success
        assert read_summary(store, retrain_day)["status"] == "trained"
        return (model_dir(store, retrain_day) / "binary.txt").read_bytes()

    def d_and_later(session):
        return session >= retrain_day

    def inside_the_window(session):
        return session == SESSIONS[0]

    assert rebuilt_after(d_and_later) == original
    assert rebuilt_after(inside_the_window) != original  # the comparison can fail: earlier labels do matter


def test_served_model_explains_with_registry_driver_names(built):
    home, lake, _ = built
    session = SESSIONS[-1]
    predictor, _, provenance = load_model(lake, session)
    window = read_window(lake, [d for d in lake.partitions("gold", "episodes")
                                if provenance["trained_on_first"] <= d <= provenance["trained_on_last"]])
    episodes = lake.read("gold", "episodes", session)
    signal = explain_setups(predictor, episodes[:1], window)[0]
    names = {d.driver for d in feature_set("T0")}
    assert {d["name"] for side in ("break", "reject") for d in signal["drivers"][side]} <= names
    X = episodes.select(list(predictor.feature_names)).to_numpy()[:1]
    np.testing.assert_allclose(predictor.contributions(X).sum(axis=1), predictor.predict(X)["raw_score"], rtol=1e-9)


def test_evaluation_and_analyses_read_the_walk_forward_predictions(built):
    home, lake, _ = built
    resources = needed(home, "lake", "mlflow", "market_data")
    reports = dg.materialize([*evaluation_assets, *analysis_assets], resources=resources)
    assert reports.success
    evaluation = json.loads((lake.root / "reports" / "break_model_evaluation" / "report.json").read_text())
    scored = pl.concat([lake.read("ml", PREDICTIONS_TABLE, s) for s in SESSIONS])
    assert evaluation["n"] == scored.height
    pooled = evaluation["pooled"]
    assert pooled["p_break_decisive"]["n"] == scored.filter(pl.col("label") != "CHOP").height
    assert pooled["p_break"]["n"] == pooled["p_break_baseline"]["n"] == scored.height
    assert pooled["p_break_decisive"]["auc"] > 0.7  # the planted signal, found walk-forward
    assert (lake.root / "reports" / "break_model_evaluation" / "reliability.png").stat().st_size > 0
    lodo = json.loads((lake.root / "reports" / "break_model_lodo" / "report.json").read_text())
    assert lodo["pooled"]["n_folds"] == len(SESSIONS)
    sections = {"segment_base_rates": "by_level_kind_direction_bucket", "level_specificity": "model_by_level_kind",
                "time_stratification": "global_model_by_bucket", "feature_interactions": "hypothesised"}
    for name, section in sections.items():
        report = json.loads((lake.root / "reports" / name / "report.json").read_text())
        assert report[section], name
    level = json.loads((lake.root / "reports" / "level_specificity" / "report.json").read_text())
    decisive_n = sum(v["n"] for v in level["model_by_level_kind"].values())
    assert decisive_n == scored.filter(pl.col("label") != "CHOP").height


def test_class_share_tolerance_widens_only_for_small_held_out_tails():
    from spymaster_assets.ml.assets import CLASS_SHARE_TOLERANCE, class_share_tolerance

    shares = (0.45, 0.45, 0.10)
    # 3 · √(0.45 · 0.55 / 100) = 0.1492: a 100-episode tail's own shares move that much by sampling
    assert class_share_tolerance(shares, 100) == pytest.approx(3 * np.sqrt(0.45 * 0.55 / 100))
    assert class_share_tolerance(shares, 10_000) == CLASS_SHARE_TOLERANCE  # large tails: the fixed 5 points
    assert class_share_tolerance(shares, None) == CLASS_SHARE_TOLERANCE
    # the miscalibration the check exists for (p(CHOP) 96 % where CHOP is 10 %) fails at any tail size ≥ 10
    assert 0.86 > class_share_tolerance(shares, 10)
