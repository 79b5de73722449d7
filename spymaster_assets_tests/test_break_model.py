"""The break model on a synthetic dataset with a known logistic signal: skill, determinism, attribution, MLflow."""

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pytest

from spymaster_assets.lib.baselines import SingleFeatureBaseline, column_aucs, fit_single_feature_baseline
from spymaster_assets.lib.break_model import (
    CLASSES,
    BreakModelConfig,
    Calibrator,
    ClassCalibrator,
    calibration_blocks,
    class_indices,
    class_share_gap,
    fit_window_model,
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
    # Isotonic only from isotonic_min_samples (1000) out-of-fold decisive episodes; Platt below.
    expected = "isotonic" if model.calibrator.n_samples >= BreakModelConfig().isotonic_min_samples else "platt"
    assert model.calibrator.n_samples >= 200 and model.calibrator.method == expected
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


def test_window_model_calibrates_on_its_own_tail_and_fixes_the_class_mix(data):
    X, labels, sessions, label_end, ts = data
    blocks = calibration_blocks(N_SESSIONS, 3, 0.3, CONFIG.embargo_sessions)
    assert [b.tolist() for b in blocks] == [[21, 22, 23], [24, 25, 26], [27, 28, 29]]  # 30 % of 30 sessions, 3 blocks
    assert calibration_blocks(3, 3, 0.3, 1) == [np.array([2])] and calibration_blocks(2, 3, 0.3, 1) == []
    window = fit_window_model(X, labels, sessions, label_end, ts, FEATURES, CONFIG)
    assert window.held_out["folds"] == 3 and window.held_out["episodes"] == 9 * PER_SESSION
    assert window.held_out["auc_decisive"] > 0.7
    assert window.calibrator.method == "platt" or window.calibrator.n_samples < 9 * PER_SESSION
    shares = np.bincount(class_indices(labels), minlength=3) / labels.size
    assert window.class_shares == pytest.approx(tuple(shares))
    # Matrix scaling reproduces the held-out class mix it was fitted on.
    assert window.held_out["mean_class_shares_calibrated"] == pytest.approx(window.held_out["held_out_class_shares"], abs=1e-3)
    out = window.predict(X)
    assert np.allclose(out["p_multiclass"].sum(axis=1), 1.0)


def test_class_calibrator_pulls_an_overconfident_chop_back_to_its_base_rate():
    # A booster that says CHOP 90 % of the time when CHOP happens 10 % of the time.
    rng = np.random.default_rng(4)
    y = rng.choice(3, size=600, p=[0.45, 0.45, 0.10])
    skewed = np.tile([0.05, 0.05, 0.90], (600, 1))
    skewed[np.arange(600), y] += 0.02  # a faint signal
    skewed /= skewed.sum(axis=1, keepdims=True)
    calibrator = ClassCalibrator.fit(skewed, y)
    fixed = calibrator(skewed)
    assert calibrator.method == "matrix_scaling"
    assert fixed.mean(axis=0) == pytest.approx(np.bincount(y, minlength=3) / y.size, abs=0.01)
    assert class_share_gap(fixed.mean(axis=0), [0.45, 0.45, 0.10]) < 0.05 < class_share_gap(skewed.mean(axis=0), [0.45, 0.45, 0.10])
    again = ClassCalibrator.from_dict(json.loads(json.dumps(calibrator.to_dict())))
    assert np.array_equal(again(skewed), fixed)
    assert ClassCalibrator.fit(skewed[:10], y[:10]).method == "identity"
    assert ClassCalibrator.fit(skewed, np.where(y == 2, 0, y)).method == "identity"  # a class never seen


def test_single_feature_baseline_by_hand():
    # Column 0: perfect ranking upside down; column 1: half right; column 2: constant.
    X = np.array([[4.0, 1.0, 7.0], [3.0, 2.0, 7.0], [2.0, 1.0, 7.0], [1.0, 2.0, 7.0]])
    y = np.array([False, False, True, True])
    assert column_aucs(X, y).tolist() == [0.0, 0.5, 0.5]
    rng = np.random.default_rng(9)
    n = 400
    X = rng.normal(size=(n, 4))
    y = rng.random(n) < 1 / (1 + np.exp(1.5 * X[:, 2]))  # lower x2 → BREAK
    baseline = fit_single_feature_baseline(X, y, ["a", "b", "c", "d"])
    assert baseline.feature == "c" and baseline.sign == -1 and baseline.window_auc > 0.7
    p = baseline.predict(np.array([-2.0, 0.0, 2.0]))
    assert p[0] > p[1] > p[2]
    assert abs(baseline.predict(X[:, 2]).mean() - y.mean()) < 0.01  # logistic with intercept: calibrated in the large
    assert SingleFeatureBaseline.from_dict(json.loads(json.dumps(baseline.to_dict()))) == baseline
    assert fit_single_feature_baseline(X[:10], y[:10], ["a", "b", "c", "d"]) is None
    assert fit_single_feature_baseline(X, np.zeros(n, dtype=bool), ["a", "b", "c", "d"]) is None


def _write_model_dir(directory: Path) -> None:
    directory.mkdir(parents=True)
    (directory / "binary.txt").write_text("tree\n" * 50)
    (directory / "predictor.json").write_text(json.dumps({"calibrator": {"method": "identity"}}))


@pytest.mark.slow
def test_mlflow_retrain_run_is_tagged_verified_and_registered(tmp_path, monkeypatch):
    # Keep the global tracking URI the test process had (the module must not change it).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/elsewhere.db")
    from spymaster_assets.lib import mlflow_tracking

    home, model = tmp_path / "home", tmp_path / "model"
    _write_model_dir(model)
    run_id, version = mlflow_tracking.log_retrain(
        home, model, params={"trained_on_last": "2024-05-20"}, metrics={"held_out_auc_decisive": 0.71, "x": float("nan")},
        tags={"dagster/partition": "2024-05-22", "spymaster.as_of": "2024-05-22"}, run_name="as of 2024-05-22",
        registered_model_name="test_break_model")
    import mlflow

    assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path}/elsewhere.db"
    uri = mlflow_tracking.tracking_uri(home)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["dagster/partition"] == "2024-05-22"
    assert run.data.metrics == {"held_out_auc_decisive": 0.71}  # NaN is not a metric
    assert str(client.get_experiment(run.info.experiment_id).artifact_location).startswith((home / "mlflow-artifacts").as_uri())
    (registered,) = client.search_model_versions("name = 'test_break_model'")
    assert str(registered.version) == version and registered.run_id == run_id and registered.tags["spymaster.as_of"] == "2024-05-22"
    folder = Path(registered.source.removeprefix("file://"))
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {p.name: p.read_bytes() for p in model.iterdir()}


KILLED_TRAINING = """
import sys, time
from pathlib import Path
from spymaster_assets.lib import mlflow_tracking

def slow_verify(client, run_id, expected):  # the artifacts are uploaded; die before the run ends or registers
    Path(sys.argv[3]).write_text(run_id)
    time.sleep(600)

mlflow_tracking.verify_artifacts = slow_verify
mlflow_tracking.log_retrain(Path(sys.argv[1]), Path(sys.argv[2]), params={}, metrics={}, tags={"dagster/partition": "D"},
                            run_name="killed", registered_model_name="test_break_model")
"""


@pytest.mark.slow
def test_a_killed_training_leaves_no_running_run_and_no_empty_version(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from spymaster_assets.lib import mlflow_tracking

    home, model, marker = tmp_path / "home", tmp_path / "model", tmp_path / "started"
    _write_model_dir(model)
    child = subprocess.Popen([sys.executable, "-c", KILLED_TRAINING, str(home), str(model), str(marker)])
    deadline = time.monotonic() + 120
    while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the training subprocess never reached its artifacts"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    killed = marker.read_text()

    import mlflow

    uri = mlflow_tracking.tracking_uri(home)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.get_run(killed).info.status == "RUNNING"  # a kill -9 cannot say goodbye
    assert client.search_model_versions("name = 'test_break_model'") == []  # nothing registered before verification

    # The next training marks the dead process's run FAILED, then logs and registers its own.
    run_id, version = mlflow_tracking.log_retrain(home, model, params={}, metrics={}, tags={}, run_name="next",
                                                  registered_model_name="test_break_model")
    assert client.get_run(killed).info.status == "FAILED"
    assert "died" in client.get_run(killed).data.tags["spymaster.failure"]
    assert client.get_run(run_id).info.status == "FINISHED"
    (registered,) = client.search_model_versions("name = 'test_break_model'")
    assert registered.run_id == run_id and registered.status == "READY"
    assert any(Path(registered.source.removeprefix("file://")).iterdir())
    assert mlflow_tracking.fail_stale_runs(home) == []  # a live or finished run is never failed
