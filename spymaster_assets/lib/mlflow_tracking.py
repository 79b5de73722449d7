"""MLflow tracking of break-model training runs on a local SQLite store (SPEC §9).

Layout under the project home: `mlflow.db` (tracking + model registry) and
`mlflow-artifacts/` (the experiment's artifact location), so `mlflow ui --backend-store-uri
sqlite:///<home>/mlflow.db` shows everything and nothing lands in the working directory.

What a run holds:
- params: the model config, the caller's params, config hash and data range;
- metrics: per fold (`wf_fold_*`, `lodo_fold_*`, step = fold index) and pooled
  (`wf_*`, `wf_cal_*`, `lodo_*`, see `TrainedBreakModel.pooled_metrics`);
- models `binary` and `multiclass` via `mlflow.lightgbm.log_model`; the binary one is
  registered under `registered_model_name` (its version is tagged with the run id);
- `predictor/predictor.json`: the calibrator (isotonic knots / Platt coefficients as
  plain floats), base rates, class order and feature layout. JSON rather than a pickle:
  Python floats round-trip exactly through JSON, so a reloaded predictor gives
  bit-identical calibrated probabilities, and the artifact is readable in the UI;
- `feature_importance.json` / `.csv`, `validation/folds.json`, `plots/reliability.png`.

`load_break_model(run_id, home)` rebuilds a `BreakPredictor` from those artifacts.

mlflow is imported inside functions: importing it costs seconds, and most of the
project never needs it. Everything here is offline: telemetry is disabled (it would try to
reach the internet), and requirements are given explicitly instead of inferred (inference
runs a subprocess that imports the model's dependencies).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from .break_model import METRIC_PREFIX, BreakPredictor, TrainedBreakModel
from .metrics import reliability_png

EXPERIMENT_NAME = "spymaster_break_model"
REGISTERED_MODEL_NAME = "spymaster_break_model"
ARTIFACT_DIR = "mlflow-artifacts"
PREDICTOR_ARTIFACT = "predictor/predictor.json"
BINARY_URI_TAG = "spymaster.binary_model_uri"
MULTICLASS_URI_TAG = "spymaster.multiclass_model_uri"
CONFIG_HASH_TAG = "spymaster.config_hash"

# Set before mlflow is first imported: some of these are read at import time.
_OFFLINE_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "GIT_PYTHON_REFRESH": "quiet",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # Requirements are pinned explicitly; do not `uv export` the project or copy uv.lock into every model.
    "MLFLOW_UV_AUTO_DETECT": "false",
    "MLFLOW_LOG_UV_FILES": "false",
}


def tracking_db(home: Path | str) -> Path:
    return Path(home).resolve() / "mlflow.db"


def tracking_uri(home: Path | str) -> str:
    """`sqlite:///<absolute home>/mlflow.db` (three slashes + an absolute path = four in a row)."""
    return f"sqlite:///{tracking_db(home)}"


def artifact_root(home: Path | str) -> Path:
    return Path(home).resolve() / ARTIFACT_DIR


def _mlflow():
    for key, value in _OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    import mlflow

    return mlflow


@contextmanager
def _tracking(home: Path | str) -> Iterator:
    """Point the fluent API at `home` for the duration, then restore whatever was set before."""
    mlflow = _mlflow()
    previous_tracking, previous_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    Path(home).mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(home)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield mlflow
    finally:
        mlflow.set_tracking_uri(previous_tracking)
        mlflow.set_registry_uri(previous_registry)


def experiment_id(home: Path | str, name: str = EXPERIMENT_NAME) -> str:
    """The experiment's id, creating it with its artifacts under `<home>/mlflow-artifacts`."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(home), registry_uri=tracking_uri(home))
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    root = artifact_root(home)
    root.mkdir(parents=True, exist_ok=True)
    return client.create_experiment(name, artifact_location=root.as_uri())


def _numeric(metrics: Mapping) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _param_value(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]  # MLflow's parameter value limit


def log_training_run(model: TrainedBreakModel, home: Path | str, params: Mapping | None = None,
                     config_hash: str | None = None, data_range: Mapping | None = None,
                     fold_metrics: Mapping[str, list[dict]] | None = None,
                     feature_importance=None, reliability_png_path: Path | str | None = None,
                     registered_model_name: str | None = REGISTERED_MODEL_NAME,
                     experiment_name: str = EXPERIMENT_NAME, run_name: str | None = None,
                     tags: Mapping[str, str] | None = None) -> str:
    """Log one training run (see the module docstring for its contents) and return its run id.

    Defaults come from the model itself: `fold_metrics` from its validation folds
    (scheme → list of fold dicts), `feature_importance` from its importance table,
    `data_range` from its data range, `config_hash` from its config fingerprint, and the
    reliability PNG is drawn from its reliability tables when no path is given.
    """
    import lightgbm

    config_hash = config_hash or model.config.fingerprint()
    data_range = dict(data_range if data_range is not None else model.data_range)
    fold_metrics = fold_metrics if fold_metrics is not None else {s: r.folds for s, r in model.validation.items()}
    importance = feature_importance if feature_importance is not None else model.feature_importance
    requirements = [f"lightgbm=={lightgbm.__version__}"]
    exp_id = experiment_id(home, experiment_name)

    with _tracking(home) as mlflow, tempfile.TemporaryDirectory() as scratch:
        run_name = run_name or f"break_model {data_range.get('first_session', '?')}..{data_range.get('last_session', '?')}"
        with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run:
            run_id = run.info.run_id
            all_params = {f"model.{k}": v for k, v in model.config.as_dict().items()}
            all_params |= {f"data.{k}": v for k, v in data_range.items()}
            all_params |= dict(params or {})
            all_params["config_hash"] = config_hash
            mlflow.log_params({k: _param_value(v) for k, v in all_params.items()})
            mlflow.set_tags({CONFIG_HASH_TAG: config_hash, "spymaster.data_range": json.dumps(data_range, default=str),
                             **dict(tags or {})})

            for scheme, folds in fold_metrics.items():
                prefix = METRIC_PREFIX.get(scheme, scheme)
                for fold in folds:
                    mlflow.log_metrics({f"{prefix}_fold_{k}": v for k, v in _numeric(fold).items() if k != "fold"},
                                       step=int(fold["fold"]))
            mlflow.log_metrics(_numeric(model.pooled_metrics()))
            mlflow.log_dict({scheme: folds for scheme, folds in fold_metrics.items()}, "validation/folds.json")

            binary_info = mlflow.lightgbm.log_model(model.binary_booster, name="binary", pip_requirements=requirements,
                                                    registered_model_name=registered_model_name)
            multiclass_info = mlflow.lightgbm.log_model(model.multiclass_booster, name="multiclass",
                                                        pip_requirements=requirements)
            mlflow.set_tags({BINARY_URI_TAG: binary_info.model_uri, MULTICLASS_URI_TAG: multiclass_info.model_uri})
            mlflow.log_dict(model.metadata(), PREDICTOR_ARTIFACT)

            if importance is not None:
                mlflow.log_dict(importance.to_dicts(), "feature_importance.json")
                mlflow.log_text(importance.write_csv(), "feature_importance.csv")
            png = Path(reliability_png_path) if reliability_png_path else reliability_png(
                model.reliability_tables(), Path(scratch) / "reliability.png", "Break model reliability (out of fold)")
            mlflow.log_artifact(str(png), "plots")

        version = getattr(binary_info, "registered_model_version", None)
        if registered_model_name and version is not None:
            client = mlflow.MlflowClient()
            client.set_model_version_tag(registered_model_name, str(version), "run_id", run_id)
            client.set_model_version_tag(registered_model_name, str(version), "predictor", PREDICTOR_ARTIFACT)
    return run_id


def load_break_model(run_id: str, home: Path | str) -> BreakPredictor:
    """Rebuild the calibrated predictor of a logged run (same predictions as at logging time)."""
    with _tracking(home) as mlflow:
        run = mlflow.MlflowClient().get_run(run_id)
        binary = mlflow.lightgbm.load_model(run.data.tags[BINARY_URI_TAG])
        multiclass = mlflow.lightgbm.load_model(run.data.tags[MULTICLASS_URI_TAG])
        meta = mlflow.artifacts.load_dict(f"runs:/{run_id}/{PREDICTOR_ARTIFACT}")
    return BreakPredictor.from_parts(binary, multiclass, meta)


def set_serving_alias(home: Path | str, run_id: str, registered_model_name: str = REGISTERED_MODEL_NAME,
                      alias: str = "serving") -> str:
    """Point `alias` at the registered version logged by `run_id` (after `serving_decision` said yes)."""
    with _tracking(home) as mlflow:
        client = mlflow.MlflowClient()
        versions = client.search_model_versions(f"name = '{registered_model_name}'")
        matching = [v for v in versions if v.tags.get("run_id") == run_id or v.run_id == run_id]
        if not matching:
            raise LookupError(f"no version of {registered_model_name} was logged by run {run_id}")
        version = str(max(int(v.version) for v in matching))
        client.set_registered_model_alias(registered_model_name, alias, version)
    return version


def serving_run_id(home: Path | str, registered_model_name: str = REGISTERED_MODEL_NAME,
                   alias: str = "serving") -> str | None:
    """The run behind the alias, or None when no model has been promoted yet."""
    with _tracking(home) as mlflow:
        client = mlflow.MlflowClient()
        try:
            version = client.get_model_version_by_alias(registered_model_name, alias)
        except mlflow.exceptions.MlflowException:
            return None
        return version.tags.get("run_id") or version.run_id


def run_metrics(home: Path | str, run_id: str) -> dict[str, float]:
    """The latest value of every metric a run logged (pooled metrics, for serving decisions)."""
    with _tracking(home) as mlflow:
        return dict(mlflow.MlflowClient().get_run(run_id).data.metrics)


def run_ui_command(home: Path | str) -> str:
    """The command that opens the MLflow UI on this tracking store."""
    return f"uv run mlflow ui --backend-store-uri {tracking_uri(home)} --host 127.0.0.1 --port 5070"


def run_params(home: Path | str, run_id: str) -> dict[str, str]:
    with _tracking(home) as mlflow:
        return dict(mlflow.MlflowClient().get_run(run_id).data.params)


ANALYSES_EXPERIMENT = "spymaster_analyses"


def log_report(home: Path | str, name: str, report_path: Path, metrics: Mapping[str, float] | None = None,
               params: Mapping | None = None) -> str:
    """One MLflow run per report materialization: the JSON as an artifact, headline numbers as metrics."""
    exp_id = experiment_id(home, ANALYSES_EXPERIMENT)
    with _tracking(home) as mlflow:
        with mlflow.start_run(experiment_id=exp_id, run_name=name) as run:
            if params:
                mlflow.log_params({k: _param_value(v) for k, v in params.items()})
            finite = {k: v for k, v in _numeric(metrics or {}).items() if math.isfinite(v)}
            if finite:
                mlflow.log_metrics(finite)
            mlflow.log_artifact(str(report_path), name)
            return run.info.run_id
