"""The break model on a synthetic dataset with a known logistic signal: skill, determinism, attribution, MLflow."""

import datetime as dt
import json
import math

import numpy as np
import pytest

from spymaster_assets.lib.break_model import (
    CLASSES,
    BreakModelConfig,
    Calibrator,
    class_indices,
    train_break_model,
)
from spymaster_assets.lib.validation import session_span_ns

S = 1_000_000_000
N_SESSIONS, PER_SESSION, N_FEATURES = 30, 40, 8
FEATURES = [f"feat_{i}" for i in range(N_FEATURES)]
# The planted signal: p(BREAK | decisive) = σ(1.2·x0 − 1.0·x1 + 0.8·x2 + session regime).
COEF = np.array([1.2, -1.0, 0.8] + [0.0] * (N_FEATURES - 3))
SECTIONS = {f: ("order_flow" if i < 2 else "liquidity" if i < 4 else "context") for i, f in enumerate(FEATURES)}
# feat_0 and feat_1 share one trader phrase on purpose: one driver, contributions added.
DRIVER_NAMES = {"feat_0": "Buy flow", "feat_1": "Buy flow", "feat_2": "Thin wall", "feat_3": "Deep book",
                "feat_4": "Early session", "feat_5": "Second attempt", "feat_6": "Dealer short gamma",
                "feat_7": "Wide ATR"}
CONFIG = BreakModelConfig(n_estimators=60, min_train_sessions=10)


def synthetic_episodes(seed=11, signal=True):
    rng = np.random.default_rng(seed)
    days = [dt.date(2024, 1, 2) + dt.timedelta(days=i) for i in range(N_SESSIONS)]
    n = N_SESSIONS * PER_SESSION
    sessions = np.repeat(np.array(days, dtype="datetime64[D]"), PER_SESSION)
    day_start = np.repeat([session_span_ns(d)[0] for d in days], PER_SESSION)
    ts = day_start + (10 * 3600 + np.sort(rng.integers(0, 3 * 3600, n))) * S  # 10:00–13:00 ET (EST)
    X = rng.normal(size=(n, N_FEATURES))
    regime = np.repeat(rng.normal(0.0, 0.3, N_SESSIONS), PER_SESSION)
    logit = X @ COEF + regime if signal else np.zeros(n)
    breaks = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    labels = np.where(rng.random(n) < 0.15, "CHOP", np.where(breaks, "BREAK", "REJECT"))
    return X, labels, sessions, ts + 240 * S, ts


@pytest.fixture(scope="module")
def data():
    return synthetic_episodes()


@pytest.fixture(scope="module")
def model(data):
    X, labels, sessions, label_end, ts = data
    return train_break_model(X, labels, sessions, label_end, ts, FEATURES, CONFIG)


def test_out_of_fold_skill_beats_the_base_rate(model):
    metrics = model.pooled_metrics()
    # Oracle AUC for this signal is ≈ 0.84; a session-purged OOF estimate must be clearly above chance.
    assert metrics["wf_auc"] > 0.7 and metrics["lodo_auc"] > 0.7
    assert metrics["wf_brier"] < metrics["wf_brier_base"] and metrics["wf_brier_skill"] > 0.1
    assert metrics["wf_log_loss"] < metrics["wf_log_loss_base"]
    assert metrics["lodo_brier_skill"] > 0.1
    # Prequential calibration is scored on folds its calibrator never saw, and still beats the base rate.
    assert metrics["wf_cal_brier_skill"] > 0.1 and metrics["wf_cal_ece"] < 0.1
    assert metrics["wf_n_folds"] == N_SESSIONS - CONFIG.min_train_sessions - CONFIG.embargo_sessions
    assert metrics["lodo_n_folds"] == N_SESSIONS


def test_folds_are_session_grouped_and_base_rates_come_from_training(model, data):
    _, labels, sessions, _, _ = data
    wf = model.validation["walk_forward"]
    first = wf.folds[0]
    assert first["test_session"] == str(sessions[(CONFIG.min_train_sessions + 1) * PER_SESSION])
    assert first["n_train"] == CONFIG.min_train_sessions * PER_SESSION and first["n_test"] == PER_SESSION
    train_labels = labels[: CONFIG.min_train_sessions * PER_SESSION]
    decisive = train_labels[train_labels != "CHOP"]
    assert first["base_rate"] == pytest.approx(np.mean(decisive == "BREAK"))
    # Every episode after the first test session is predicted exactly once, out of fold.
    assert np.array_equal(np.sort(wf.oof_idx), np.arange((CONFIG.min_train_sessions + 1) * PER_SESSION, len(labels)))


def test_no_signal_means_no_skill():
    # Negative control: labels independent of X. A leaky validation would still "find" skill.
    X, labels, sessions, label_end, ts = synthetic_episodes(seed=5, signal=False)
    noise = train_break_model(X, labels, sessions, label_end, ts, FEATURES,
                              BreakModelConfig(n_estimators=30, min_train_sessions=10, leave_one_day_out=False))
    metrics = noise.pooled_metrics()
    assert abs(metrics["wf_auc"] - 0.5) < 0.08 and metrics["wf_brier_skill"] < 0.02


def test_training_is_deterministic(model, data):
    X, labels, sessions, label_end, ts = data
    again = train_break_model(X, labels, sessions, label_end, ts, FEATURES, CONFIG)
    first, second = model.predict(X), again.predict(X)
    assert np.array_equal(first["p_break"], second["p_break"])
    assert np.array_equal(first["p_multiclass"], second["p_multiclass"])
    assert np.array_equal(model.validation["walk_forward"].oof_raw, again.validation["walk_forward"].oof_raw)


def test_predict_shapes_and_calibration(model, data):
    X = data[0]
    out = model.predict(X[:5])
    assert out["p_break"].shape == (5,) and out["p_multiclass"].shape == (5, 3)
    assert np.allclose(out["p_multiclass"].sum(axis=1), 1.0)
    assert np.array_equal(out["p_chop"], out["p_multiclass"][:, CLASSES.index("CHOP")])
    # OOF pool of decisive walk-forward episodes is > 200 here, so isotonic was chosen.
    assert model.calibrator.method == "isotonic" and model.calibrator.n_samples >= 200
    assert np.array_equal(out["p_break"], model.calibrator(out["raw_score"]))
    assert ((out["p_break"] >= 0.01) & (out["p_break"] <= 0.99)).all()


def test_calibrator_choice_matches_sklearn_and_round_trips_exactly():
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(2)
    raw = rng.normal(size=400)
    y = rng.random(400) < 1 / (1 + np.exp(-2 * raw))
    iso = Calibrator.fit(raw, y, isotonic_min_samples=200, clip=0.0)
    reference = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(raw, y)
    probe = np.linspace(-4, 4, 101)
    assert iso.method == "isotonic" and np.allclose(iso(probe), reference.predict(probe))
    platt = Calibrator.fit(raw[:150], y[:150], isotonic_min_samples=200)
    assert platt.method == "platt" and 1.0 < platt.slope < 3.5  # the planted slope is 2
    assert Calibrator.fit(raw[:10], y[:10]).method == "identity"
    for calibrator in (iso, platt):
        again = Calibrator.from_dict(json.loads(json.dumps(calibrator.to_dict())))
        assert np.array_equal(again(probe), calibrator(probe))


def test_contributions_plus_bias_equal_the_raw_score(model, data):
    X = data[0][:50]
    contrib = model.contributions(X)
    assert contrib.shape == (50, N_FEATURES + 1)
    assert np.allclose(contrib.sum(axis=1), model.predict(X)["raw_score"])


def test_explain_names_drivers_from_the_mapping_and_sums_honestly(model, data):
    X = data[0]
    row = X[7]
    signal = model.explain(row, FEATURES, SECTIONS, DRIVER_NAMES, history_X=X, context={"time_bucket": "T30_60"})
    assert set(signal) >= {"prediction", "drivers", "combos", "context", "sections"}
    json.dumps(signal, allow_nan=False)  # goes over a WebSocket as-is: plain, finite JSON values only
    drivers = signal["drivers"]["break"] + signal["drivers"]["reject"]
    assert drivers and {d["name"] for d in drivers} <= set(DRIVER_NAMES.values())
    assert all(d["log_odds"] > 0 for d in signal["drivers"]["break"])
    assert all(d["log_odds"] < 0 for d in signal["drivers"]["reject"])
    assert len(signal["drivers"]["break"]) <= 3 and len(signal["drivers"]["reject"]) <= 3

    contrib = model.contributions(row)[0]
    by_feature = dict(zip(FEATURES, contrib[:-1]))
    base = model.base_rate
    for d in drivers:
        assert d["log_odds"] == pytest.approx(sum(by_feature[f] for f in d["features"]))
        assert d["features"] == [f for f in FEATURES if DRIVER_NAMES[f] == d["name"]]
        # edge = σ(logit(base) + φ) − base
        expected = 1 / (1 + math.exp(-(math.log(base / (1 - base)) + d["log_odds"]))) - base
        assert d["edge"] == pytest.approx(expected)
        column = X[:, FEATURES.index(d["feature"])]
        assert d["percentile"] == pytest.approx(100 * np.mean(column < d["value"]) + 50 * np.mean(column == d["value"]))
    buy_flow = [d for d in drivers if d["name"] == "Buy flow"]
    assert not buy_flow or buy_flow[0]["features"] == ["feat_0", "feat_1"]

    sections = signal["sections"]
    assert sum(s["log_odds"] for s in sections.values()) == pytest.approx(contrib[:-1].sum())
    assert signal["context"]["raw_score"] == pytest.approx(contrib.sum())
    assert signal["context"]["time_bucket"] == "T30_60"
    prediction = signal["prediction"]
    assert prediction["p_break"] == pytest.approx(model.predict(row)["p_break"][0])
    assert prediction["edge"] == pytest.approx(prediction["p_break"] - base)
    assert sum(prediction["multiclass"].values()) == pytest.approx(1.0)
    for combo in signal["combos"]:
        assert combo["kind"] == "aligned_pair" and set(combo["drivers"]) <= {d["name"] for d in drivers}


def test_planted_features_dominate_attribution(model, data):
    # Mean |φ| per feature over many episodes recovers the planted coefficients' ranking.
    mean_abs = np.abs(model.contributions(data[0][:300])[:, :-1]).mean(axis=0)
    assert set(np.argsort(-mean_abs)[:3]) == {0, 1, 2}


def test_explain_rejects_a_different_layout(model, data):
    with pytest.raises(ValueError):
        model.explain(data[0][0], FEATURES[::-1], SECTIONS, DRIVER_NAMES, data[0])


def test_unknown_labels_are_an_error():
    assert class_indices(["BREAK", "CHOP", "REJECT"]).tolist() == [0, 2, 1]
    with pytest.raises(ValueError):
        class_indices(["BREAK", None])


@pytest.mark.slow
def test_mlflow_round_trip(model, data, tmp_path, monkeypatch):
    # Keep the global tracking URI the test process had (the module restores it; monkeypatch restores the env).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/elsewhere.db")
    from spymaster_assets.lib import mlflow_tracking

    home = tmp_path / "home"
    run_id = mlflow_tracking.log_training_run(model, home, params={"sessions": "synthetic"},
                                              registered_model_name="test_break_model")
    import mlflow

    assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path}/elsewhere.db"
    assert (home / "mlflow.db").is_file()
    uri = mlflow_tracking.tracking_uri(home)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.get_run(run_id)
    assert run.data.params["config_hash"] == CONFIG.fingerprint()
    assert run.data.metrics["wf_auc"] == pytest.approx(model.pooled_metrics()["wf_auc"])
    history = client.get_metric_history(run_id, "wf_fold_brier")
    assert sorted(m.step for m in history) == list(range(len(model.validation["walk_forward"].folds)))
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "plots")}
    assert {"feature_importance.json", "feature_importance.csv", "plots/reliability.png"} <= artifacts
    assert str(client.get_experiment(run.info.experiment_id).artifact_location).startswith((home / "mlflow-artifacts").as_uri())
    versions = client.search_model_versions("name = 'test_break_model'")
    assert [v.tags["run_id"] for v in versions] == [run_id]

    loaded = mlflow_tracking.load_break_model(run_id, home)
    X = data[0]
    expected, actual = model.predict(X), loaded.predict(X)
    assert np.array_equal(expected["p_break"], actual["p_break"])
    assert np.array_equal(expected["p_multiclass"], actual["p_multiclass"])
    assert loaded.explain(X[3], FEATURES, SECTIONS, DRIVER_NAMES, X) == model.explain(X[3], FEATURES, SECTIONS,
                                                                                     DRIVER_NAMES, X)
    assert mlflow_tracking.serving_run_id(home, "test_break_model") is None
    mlflow_tracking.set_serving_alias(home, run_id, "test_break_model")
    assert mlflow_tracking.serving_run_id(home, "test_break_model") == run_id
