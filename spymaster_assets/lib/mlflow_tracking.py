"""MLflow tracking of break-model retrains on a local SQLite store (SPEC §9).

Layout under the project home: `mlflow.db` (tracking + model registry) and
`mlflow-artifacts/` (the experiment's artifact location), so `mlflow ui --backend-store-uri
sqlite:///<home>/mlflow.db` shows everything and nothing lands in the working directory.

The model served for session D lives in the lake (ml/break_model/date=D/); MLflow is the
record of how each retrain came about, not the serving path. One run per retrain:
- tags: `dagster/partition` (the partition that trained it), `spymaster.as_of` (the retrain
  session), the Dagster run id, and the training process's host and pid;
- params: model and as-of config, window range, feature set; metrics: held-out evidence;
- artifacts under `model/`: the files of the lake partition (LightGBM model text, predictor
  JSON), both boosters as `mlflow.lightgbm` models, feature importance and the held-out
  reliability plot, checked after upload (paths and sizes) before anything is registered.

Crash safety: the run is created RUNNING and ends FINISHED only after its artifacts are
verified; only then is a registry version created (its source is that verified folder),
so a killed training can never leave a READY version pointing at an empty folder. A kill
-9 cannot mark its own run FAILED: the next retrain (`fail_stale_runs`) marks every RUNNING
run whose recorded process on this host no longer exists as FAILED.

There is no `serving` alias: which model serves D is decided by D's lake partition (as of D),
not by a registry pointer that would serve one model for every date.

mlflow is imported inside functions: importing it costs seconds, and most of the
project never needs it. Everything here is offline: telemetry is disabled (it would try to
reach the internet).
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Mapping

EXPERIMENT_NAME = "spymaster_break_model"
REGISTERED_MODEL_NAME = "spymaster_break_model"
ARTIFACT_DIR = "mlflow-artifacts"
MODEL_ARTIFACT_DIR = "model"
CONFIG_HASH_TAG = "spymaster.config_hash"
PARTITION_TAG = "dagster/partition"
AS_OF_TAG = "spymaster.as_of"
HOST_TAG = "spymaster.host"
PID_TAG = "spymaster.pid"
FAILURE_TAG = "spymaster.failure"

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


def _client(home: Path | str):
    """A client bound to `home`'s store; the process-wide tracking URI is never touched."""
    mlflow = _mlflow()
    Path(home).mkdir(parents=True, exist_ok=True)
    return mlflow.MlflowClient(tracking_uri=tracking_uri(home), registry_uri=tracking_uri(home))


def experiment_id(home: Path | str, name: str = EXPERIMENT_NAME) -> str:
    """The experiment's id, creating it with its artifacts under `<home>/mlflow-artifacts`."""
    client = _client(home)
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


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def fail_stale_runs(home: Path | str, experiment_name: str = EXPERIMENT_NAME) -> list[str]:
    """Mark FAILED every RUNNING run whose training process (recorded host and pid) is gone.

    Runs of other hosts, or without a recorded process, are left alone: their process cannot be checked.
    """
    if not tracking_db(home).exists():
        return []
    client = _client(home)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    host = socket.gethostname()
    stale = [run for run in client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
             if run.data.tags.get(HOST_TAG) == host and run.data.tags.get(PID_TAG, "").isdigit()
             and int(run.data.tags[PID_TAG]) != os.getpid() and not _process_alive(int(run.data.tags[PID_TAG]))]
    for run in stale:
        client.set_tag(run.info.run_id, FAILURE_TAG, f"training process {run.data.tags[PID_TAG]} died before finishing")
        client.set_terminated(run.info.run_id, "FAILED")
    return [run.info.run_id for run in stale]


def _stored_files(client, run_id: str, folder: str) -> dict[str, int]:
    found = {}
    for artifact in client.list_artifacts(run_id, folder):
        if artifact.is_dir:
            found |= _stored_files(client, run_id, artifact.path)
        else:
            found[artifact.path.removeprefix(MODEL_ARTIFACT_DIR + "/")] = artifact.file_size
    return found


def local_files(directory: Path) -> dict[str, int]:
    """Relative path → size in bytes of every file under `directory`."""
    return {p.relative_to(directory).as_posix(): p.stat().st_size for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def verify_artifacts(client, run_id: str, expected: Mapping[str, int]) -> None:
    """The run's `model/` folder holds exactly `expected` (relative path → size in bytes), or raise."""
    stored = _stored_files(client, run_id, MODEL_ARTIFACT_DIR)
    if stored != dict(expected):
        raise RuntimeError(f"run {run_id}: artifacts {stored} differ from the files logged {dict(expected)}")


def save_lightgbm_flavor(booster, path: Path) -> Path:
    """A booster as an `mlflow.lightgbm` model folder (MLmodel + model file), loadable with
    `mlflow.lightgbm.load_model("runs:/<run>/model/<name>")` once logged inside a retrain's folder."""
    import lightgbm

    _mlflow().lightgbm.save_model(booster, str(path), pip_requirements=[f"lightgbm=={lightgbm.__version__}"])
    return path


def log_retrain(home: Path | str, model_dir: Path, *, params: Mapping, metrics: Mapping[str, float],
                tags: Mapping[str, str], run_name: str, registered_model_name: str | None = REGISTERED_MODEL_NAME,
                experiment_name: str = EXPERIMENT_NAME) -> tuple[str, str | None]:
    """Log one retrain (the files of `model_dir` as artifacts) and register it; return (run id, version).

    Order matters for crash safety (module docstring): stale runs are failed first, the run
    is FINISHED only after its artifacts are verified, and registration comes last.
    """
    from mlflow.entities import Metric, Param, RunTag

    fail_stale_runs(home, experiment_name)
    exp_id = experiment_id(home, experiment_name)
    mlflow = _mlflow()
    client = _client(home)
    process = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    run = client.create_run(exp_id, run_name=run_name, tags={**dict(tags), **process})
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        finite = {k: v for k, v in _numeric(metrics).items() if math.isfinite(v)}
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in finite.items()],
                         params=[Param(k, _param_value(v)) for k, v in params.items()],
                         tags=[RunTag(k, str(v)) for k, v in tags.items()])
        files = local_files(model_dir)
        client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT_DIR)
        verify_artifacts(client, run_id, files)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    version = None
    if registered_model_name:
        try:
            client.get_registered_model(registered_model_name)
        except mlflow.exceptions.MlflowException:
            client.create_registered_model(registered_model_name)
        version = client.create_model_version(registered_model_name, f"{run.info.artifact_uri}/{MODEL_ARTIFACT_DIR}",
                                              run_id=run_id, tags={"run_id": run_id, **dict(tags)}).version
    return run_id, None if version is None else str(version)


def run_ui_command(home: Path | str) -> str:
    """The command that opens the MLflow UI on this tracking store."""
    return f"uv run mlflow ui --backend-store-uri {tracking_uri(home)} --host 127.0.0.1 --port 5070"


ANALYSES_EXPERIMENT = "spymaster_analyses"


def log_report(home: Path | str, name: str, report_path: Path, metrics: Mapping[str, float] | None = None,
               params: Mapping | None = None) -> str:
    """One MLflow run per report materialization: the JSON as an artifact, headline numbers as metrics."""
    from mlflow.entities import Metric, Param

    exp_id = experiment_id(home, ANALYSES_EXPERIMENT)
    client = _client(home)
    run_id = client.create_run(exp_id, run_name=name, tags={HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}).info.run_id
    try:
        now = int(time.time() * 1000)
        finite = {k: v for k, v in _numeric(metrics or {}).items() if math.isfinite(v)}
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in finite.items()],
                         params=[Param(k, _param_value(v)) for k, v in (params or {}).items()])
        client.log_artifact(run_id, str(report_path), name)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id
