"""ML assets: the break model as of each session, its predictions, and their walk-forward evaluation.

- `ml/break_model` (partition D): a LightGBM model (binary BREAK vs REJECT + multiclass, both
  calibrated) fitted only on episodes of a bounded trailing window of sessions strictly before
  D, retrained every few sessions and otherwise reused; stored in the lake partition, each
  retrain an MLflow run.
- `ml/break_predictions` (partition D): D's episodes scored by D's model, with the
  single-feature baseline beside it. The union of these partitions is the walk-forward evaluation.
"""


import datetime as dt
import shutil
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from ..lake import Lake
from ..lib.baselines import fit_single_feature_baseline
from ..lib.break_model import CHOP_IDX, AsOfConfig, BreakModelConfig, class_share_gap, fit_window_model
from ..lib.calendar import session_window
from ..lib.episodes import vector_matrix
from ..lib.metrics import reliability_png
from ..lib.mlflow_tracking import (
    AS_OF_TAG,
    CONFIG_HASH_TAG,
    PARTITION_TAG,
    log_retrain,
    run_ui_command,
    save_lightgbm_flavor,
)
from ..partitioned import EPISODES, RangeRun, as_of_deps, session_asset_defaults, session_check, stamp
from ..resources import LakeResource, MlflowResource, PipelineSettings
from .model_store import (
    LAYER,
    NOT_ENOUGH_HISTORY,
    REUSED,
    SCHEMA_VERSION,
    TABLE,
    TRAINED,
    copy_model_files,
    has_model,
    load_model,
    model_dir,
    read_summary,
    write_model_files,
    write_summary,
)
from .training import complete_training_set, dims_named, read_window, retrain_session, window_partitions

BREAK_MODEL_KEY = dg.AssetKey(["ml", "break_model"])
BREAK_PREDICTIONS_KEY = dg.AssetKey(["ml", "break_predictions"])
PREDICTIONS_TABLE = "break_predictions"
AS_OF = AsOfConfig()
MODEL_CONFIG = BreakModelConfig()
CLASS_SHARE_TOLERANCE = 0.05  # probability points between mean predicted class shares and base rates
# ... or more where the held-out tail is small: its own class shares differ from the window's by
# sampling alone (SE √(p(1−p)/n): 0.04 at 150 episodes), and the check is for a miscalibrated model
# (a p(CHOP) of 96 % where CHOP is 9 %), not for a small sample.
CLASS_SHARE_SAMPLING_SES = 3.0


def class_share_tolerance(base_shares, held_out_episodes: int | None) -> float:
    """The gap allowed between mean predicted class shares and the window's base rates."""
    if not held_out_episodes:
        return CLASS_SHARE_TOLERANCE
    p = np.asarray(base_shares, dtype=np.float64)
    return max(CLASS_SHARE_TOLERANCE, CLASS_SHARE_SAMPLING_SES * float(np.sqrt(np.max(p * (1 - p)) / held_out_episodes)))
EXPECTED = (FileNotFoundError, ValueError)

TRAINED_STRICTLY_BEFORE = "TRAINED_STRICTLY_BEFORE"
CLASS_SHARES_MATCH_BASE_RATES = "CLASS_SHARES_MATCH_BASE_RATES"
SCORED_BY_AN_EARLIER_MODEL = "SCORED_BY_AN_EARLIER_MODEL"

PREDICTION_SCHEMA: dict[str, pl.DataType] = {
    "episode_id": pl.Utf8,
    "session": pl.Date,
    "ts_ns": pl.Int64,
    "level_kind": pl.Utf8,
    "direction": pl.Utf8,
    "time_bucket": pl.Utf8,
    "tier": pl.Utf8,
    "label": pl.Utf8,  # null while unlabelled
    "p_break": pl.Float64,  # unconditional p(BREAK) = p_break_decisive · (1 − p_chop)
    "p_break_decisive": pl.Float64,  # calibrated binary model: p(BREAK | BREAK or REJECT) (SPEC §9)
    "p_reject": pl.Float64,  # (1 − p_break_decisive) · (1 − p_chop)
    "p_chop": pl.Float64,  # calibrated multiclass model
    "base_break": pl.Float64,  # window BREAK share of all episodes (yardstick of p_break)
    "base_break_decisive": pl.Float64,  # window BREAK share of decisive episodes (yardstick of p_break_decisive)
    "base_chop": pl.Float64,
    "model_as_of": pl.Date,  # the retrain session whose window the model was fitted on
    "trained_on_first": pl.Date,
    "trained_on_last": pl.Date,
    "p_break_baseline": pl.Float64,  # single-feature baseline, unconditional p(BREAK) (lib/baselines.py)
    "baseline_feature": pl.Utf8,
}


def config_hash(settings: PipelineSettings) -> str:
    return f"{settings.config_hash()}-{MODEL_CONFIG.fingerprint()}-{AS_OF.fingerprint()}"


def reusable_partition(store: Lake, session: dt.date, trained_for: dt.date, wanted_hash: str) -> str | None:
    """An earlier partition (at or after the retrain day) holding the retrain day's model, built with the
    same configuration: the retrain day's own partition first (a rebuilt retrain day wins over older
    copies), then the newest copy; None when the model must be (re)trained."""
    candidates = [day for day in store.partitions(LAYER, TABLE) if trained_for.isoformat() <= day < session.isoformat()]
    candidates.sort(key=lambda day: (day == trained_for.isoformat(), day))
    for day in reversed(candidates):
        summary = read_summary(store, day)
        same_config = store.file_metadata(LAYER, TABLE, day).get("config_hash") == wanted_hash
        if same_config and summary["trained_for"] == trained_for and (
                summary["status"] == NOT_ENOUGH_HISTORY or has_model(model_dir(store, day))):
            return day
    return None


def train_as_of(store: Lake, trained_for: dt.date, directory, cache: dict) -> tuple[dict, object | None]:
    """Fit the model of retrain day R into `directory`: window before R, embargoed, purged at R's open."""
    days = window_partitions(store, trained_for, AS_OF.window_sessions, AS_OF.embargo_sessions)
    episodes = read_window(store, days, cache)
    if episodes.height:
        episodes = episodes.filter(pl.col("label_end_ns") < session_window(trained_for).rth_open_ns)
    n_sessions = episodes["session"].n_unique() if episodes.height else 0
    row = {"trained_for": trained_for, "n_sessions": n_sessions, "n_episodes": episodes.height}
    if n_sessions < AS_OF.min_history_sessions:
        return row | {"status": NOT_ENOUGH_HISTORY,
                      "note": f"{n_sessions} labelled sessions before {trained_for} < {AS_OF.min_history_sessions}"}, None
    data, incomplete = complete_training_set(episodes)
    if incomplete:  # a NaN in a dimension the tier supplies: the episode is left out, and counted
        row["n_incomplete"] = incomplete
    labels = data.episodes["label"]
    try:
        model = fit_window_model(data.X, labels.to_list(), data.sessions(), data.episodes["label_end_ns"].to_numpy(),
                                 data.episodes["ts_ns"].to_numpy(), data.feature_names, MODEL_CONFIG,
                                 AS_OF.calibration_folds, AS_OF.calibration_share)
    except ValueError as exc:  # e.g. a window without both BREAK and REJECT
        return row | {"status": NOT_ENOUGH_HISTORY, "note": str(exc)}, None
    baseline = fit_single_feature_baseline(data.X, (labels == "BREAK").to_numpy(), data.feature_names)
    held = model.held_out
    first, last = data.episodes["session"].min(), data.episodes["session"].max()
    row |= {
        "status": TRAINED, "trained_on_first": first, "trained_on_last": last, "tier": data.tier,
        "n_decisive": model.data_range["n_decisive"],
        "base_break": model.class_shares[0], "base_reject": model.class_shares[1], "base_chop": model.class_shares[CHOP_IDX],
        "base_break_decisive": model.base_rate, "calibration": model.calibrator.method,
        "class_calibration": model.class_calibrator.method, "held_out_auc_decisive": held.get("auc_decisive"),
        "class_share_gap": class_share_gap(held["mean_class_shares_calibrated"], model.class_shares)
        if "mean_class_shares_calibrated" in held else None,
        "class_share_gap_raw": class_share_gap(held["mean_class_shares_raw"], model.class_shares)
        if "mean_class_shares_raw" in held else None,
        "class_share_tolerance": class_share_tolerance(model.class_shares, held.get("episodes")),
        "baseline_feature": baseline.feature if baseline else None,
        "baseline_window_auc": baseline.window_auc if baseline else None,
    }
    write_model_files(directory, model, baseline, {"trained_for": trained_for.isoformat(), "trained_on_first": str(first),
                                                   "trained_on_last": str(last), "tier": data.tier})
    return row, model


def _iso(value) -> str | None:
    return None if value is None else str(value)


def log_retrain_run(mlflow_home: Path, staging: Path, model, row: dict, session: dt.date, trained_for: dt.date,
                    wanted_hash: str, dagster_run_id: str) -> str:
    """One MLflow run for a retrain: the partition's files, both boosters as `mlflow.lightgbm` models,
    feature importance and the held-out reliability plot; tagged with the partition and its as-of date."""
    with tempfile.TemporaryDirectory() as scratch:
        bundle = Path(scratch)
        copy_model_files(staging, bundle)
        save_lightgbm_flavor(model.binary_booster, bundle / "lightgbm_binary")
        save_lightgbm_flavor(model.multiclass_booster, bundle / "lightgbm_multiclass")
        (bundle / "feature_importance.csv").write_text(model.feature_importance.write_csv())
        if model.held_out.get("reliability_raw"):
            reliability_png({"held-out raw p(BREAK | decisive)": pl.DataFrame(model.held_out["reliability_raw"])},
                            bundle / "plots" / "reliability.png", f"Break model as of {trained_for}: inner walk-forward")
        run_id, _ = log_retrain(
            mlflow_home, bundle, run_name=f"break_model as of {trained_for} (partition {session})",
            params={**{f"model.{k}": v for k, v in MODEL_CONFIG.as_dict().items()},
                    **{f"as_of.{k}": v for k, v in AS_OF.as_dict().items()},
                    "config_hash": wanted_hash, "trained_for": trained_for.isoformat(),
                    "trained_on_first": _iso(row["trained_on_first"]), "trained_on_last": _iso(row["trained_on_last"]),
                    "tier": row["tier"], "n_sessions": row["n_sessions"], "n_episodes": row["n_episodes"]},
            metrics={k: row[k] for k in ("held_out_auc_decisive", "class_share_gap", "class_share_gap_raw", "base_break",
                                         "base_chop", "base_break_decisive", "baseline_window_auc")
                     if row.get(k) is not None},
            tags={PARTITION_TAG: session.isoformat(), AS_OF_TAG: trained_for.isoformat(), CONFIG_HASH_TAG: wanted_hash,
                  "dagster/run_id": dagster_run_id})
    return run_id


def build_model_partition(store: Lake, session: dt.date, wanted_hash: str, file_stamp: dict[str, str], cache: dict,
                          mlflow_home: Path | None, dagster_run_id: str = "", log=None) -> dict:
    """Write ml/break_model/date=`session`: reuse the retrain day's model if an earlier partition holds
    it (same configuration), else train it (and log the retrain to MLflow under `mlflow_home`, if given).
    Returns the partition's summary as JSON-safe values."""
    trained_for = retrain_session(session, AS_OF.retrain_every)
    source = reusable_partition(store, session, trained_for, wanted_hash)
    staging = store.staging_dir(LAYER, TABLE, session)
    try:
        if source is not None:
            row = read_summary(store, source) | {"reused_from": dt.date.fromisoformat(source)}
            if row["status"] != NOT_ENOUGH_HISTORY:
                copy_model_files(model_dir(store, source), staging)
                row["status"] = REUSED
        else:
            row, model = train_as_of(store, trained_for, staging, cache)
            if model is not None and mlflow_home is not None:
                row["mlflow_run_id"] = log_retrain_run(mlflow_home, staging, model, row, session, trained_for,
                                                       wanted_hash, dagster_run_id)
        row["as_of"] = session
        write_summary(staging, row, file_stamp | {"config_hash": wanted_hash})
        store.publish_dir(staging, LAYER, TABLE, session)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if row["status"] == NOT_ENOUGH_HISTORY and log is not None:
        log.warning(f"{session}: no model ({row.get('note')})")
    return {k: (_iso(v) if isinstance(v, dt.date) else v) for k, v in row.items() if v is not None} | (
        {"mlflow_ui": run_ui_command(mlflow_home)} if row.get("mlflow_run_id") else {})


@dg.asset(
    key=BREAK_MODEL_KEY,
    deps=as_of_deps(EPISODES),
    kinds={"lightgbm", "mlflow"},
    code_version="break-model-as-of-1",
    check_specs=[
        session_check(TRAINED_STRICTLY_BEFORE, asset=BREAK_MODEL_KEY, blocking=True,
                          description="Every model was trained only on sessions strictly before its partition date"),
        session_check(CLASS_SHARES_MATCH_BASE_RATES, asset=BREAK_MODEL_KEY,
                          description=f"Mean calibrated multiclass shares on the held-out window tail are within "
                                      f"{CLASS_SHARE_TOLERANCE:.0%} of the window's base rates (or "
                                      f"{CLASS_SHARE_SAMPLING_SES:.0f} sampling SEs of a share, if more)"),
    ],
    **session_asset_defaults("ml"),
)
def break_model(context: dg.AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource,
                settings: PipelineSettings) -> dg.MaterializeResult:
    """The break model serving session D, trained as of D: LightGBM BREAK vs REJECT (calibrated on an
    inner walk-forward of the window) and BREAK/REJECT/CHOP (recalibrated to the class mix), fitted on
    at most 120 sessions strictly before the retrain day (every 5th session; days in between reuse
    it), embargoed one session and purged at the retrain day's open. Fewer than 5 labelled sessions:
    a flagged partition without a model. Each retrain is an MLflow run tagged with its partition."""
    store, home = lake.lake(), mlflow.home_path()
    wanted_hash = config_hash(settings)
    cache: dict = {}
    run = RangeRun(context)

    def build(session: dt.date) -> dict:
        return build_model_partition(store, session, wanted_hash, stamp(settings, SCHEMA_VERSION), cache,
                                     home, context.run_id, context.log)

    run.run(build, expected=EXPECTED)
    leaks = {day: s["trained_on_last"] for day, s in run.per_session.items()
             if "trained_on_last" in s and s["trained_on_last"] >= min(day, s["trained_for"])}
    gaps = {day: s["class_share_gap"] for day, s in run.per_session.items() if "class_share_gap" in s}
    wide = {day: gap for day, gap in gaps.items()
            if gap > run.per_session[day].get("class_share_tolerance", CLASS_SHARE_TOLERANCE)}
    return dg.MaterializeResult(
        metadata=run.metadata(),
        check_results=[
            dg.AssetCheckResult(check_name=TRAINED_STRICTLY_BEFORE, passed=not leaks,
                                metadata={"leaks": dg.MetadataValue.json(leaks)}),
            dg.AssetCheckResult(check_name=CLASS_SHARES_MATCH_BASE_RATES, passed=not wide,
                                severity=dg.AssetCheckSeverity.WARN,
                                metadata={"gaps": dg.MetadataValue.json(gaps), "too_wide": dg.MetadataValue.json(wide)}),
        ],
    )


def score_session(episodes: pl.DataFrame, predictor, baseline, provenance: dict, summary: dict) -> pl.DataFrame:
    """D's episodes scored by D's model. Episodes lacking a dimension of the model's feature set
    (a lower tier than it was trained on) are left out, not imputed."""
    dims = dims_named(predictor.feature_names)
    X = vector_matrix(episodes, dims)
    complete = np.isfinite(X).all(axis=1)
    scored, X = episodes.filter(pl.Series(complete)), X[complete]
    out = predictor.predict(X) if X.shape[0] else {"p_break": np.empty(0), "p_multiclass": np.empty((0, 3))}
    decisive, p_chop = out["p_break"], out["p_multiclass"][:, CHOP_IDX]
    baseline_p = (baseline.predict(scored[baseline.feature].to_numpy()) if baseline is not None
                  else np.full(scored.height, np.nan))
    return scored.select("episode_id", "session", "ts_ns", "level_kind", "direction", "time_bucket", "tier",
                         "label").with_columns(
        pl.Series("p_break", decisive * (1.0 - p_chop)),
        pl.Series("p_break_decisive", decisive),
        pl.Series("p_reject", (1.0 - decisive) * (1.0 - p_chop)),
        pl.Series("p_chop", p_chop),
        pl.lit(summary["base_break"]).alias("base_break"),
        pl.lit(summary["base_break_decisive"]).alias("base_break_decisive"),
        pl.lit(summary["base_chop"]).alias("base_chop"),
        pl.lit(summary["trained_for"]).alias("model_as_of"),
        pl.lit(dt.date.fromisoformat(provenance["trained_on_first"])).alias("trained_on_first"),
        pl.lit(dt.date.fromisoformat(provenance["trained_on_last"])).alias("trained_on_last"),
        pl.Series("p_break_baseline", baseline_p).fill_nan(None),
        pl.lit(baseline.feature if baseline is not None else None, dtype=pl.Utf8).alias("baseline_feature"),
    ).select(list(PREDICTION_SCHEMA)).cast(PREDICTION_SCHEMA)


@dg.asset(
    key=BREAK_PREDICTIONS_KEY,
    deps=[EPISODES, BREAK_MODEL_KEY],
    kinds={"lightgbm", "parquet"},
    check_specs=[session_check(SCORED_BY_AN_EARLIER_MODEL, asset=BREAK_PREDICTIONS_KEY, blocking=True,
                                   description="Every prediction comes from a model trained on earlier sessions only")],
    **session_asset_defaults("ml"),
)
def break_predictions(context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings) -> dg.MaterializeResult:
    """Session D's episodes scored by D's model (as of D): p(BREAK | decisive), p(CHOP), the unconditional
    p(BREAK) and p(REJECT), the window's base rates, the model's training range, and the single-feature
    baseline. No model for D (not enough history) → an empty partition, flagged; nothing is faked."""
    store = lake.lake()
    run = RangeRun(context)

    def build(session: dt.date) -> dict:
        summary = read_summary(store, session)
        if summary is None:
            raise FileNotFoundError(f"ml/break_model has no partition {session}: materialize it first")
        loaded = load_model(store, session)
        meta = stamp(settings, SCHEMA_VERSION) | {"model_status": summary["status"]}
        if loaded is None:
            store.write_frames(LAYER, PREDICTIONS_TABLE, session, [], PREDICTION_SCHEMA, meta)
            return {"rows": 0, "model_status": summary["status"], "note": summary.get("note") or "no model"}
        predictor, baseline, provenance = loaded
        episodes = store.read("gold", "episodes", session)
        scored = score_session(episodes, predictor, baseline, provenance, summary)
        store.write_frames(LAYER, PREDICTIONS_TABLE, session, [scored], PREDICTION_SCHEMA,
                           meta | {"model_as_of": str(summary["trained_for"])})
        return {"rows": scored.height, "unscored": episodes.height - scored.height, "model_status": summary["status"],
                "model_as_of": str(summary["trained_for"]), "trained_on_last": provenance["trained_on_last"]}

    run.run(build, expected=EXPECTED)
    leaks = {day: s["trained_on_last"] for day, s in run.per_session.items()
             if "trained_on_last" in s and s["trained_on_last"] >= day}
    return dg.MaterializeResult(
        metadata=run.metadata(**{"dagster/row_count": run.total("rows")}),
        check_results=[dg.AssetCheckResult(check_name=SCORED_BY_AN_EARLIER_MODEL, passed=not leaks,
                                           metadata={"leaks": dg.MetadataValue.json(leaks)})],
    )


def _ml_assets():
    from .evaluation import evaluation_assets  # the reports read the tables above; imported last (no cycle)

    return [break_model, break_predictions, *evaluation_assets]


ml_assets = _ml_assets()
