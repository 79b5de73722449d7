"""ML assets: the LightGBM break model, validated walk-forward and leave-one-day-out, tracked in MLflow."""

import tempfile
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from ..gold.evaluation import oracle_comparison
from ..lib.break_model import WALK_FORWARD, BreakModelConfig, serving_decision, train_break_model
from ..lib.metrics import reliability_png
from ..lib.mlflow_tracking import (
    log_training_run,
    run_metrics,
    run_ui_command,
    serving_run_id,
    set_serving_alias,
)
from ..partitioned import OWNERS
from ..resources import LakeResource, MarketDataResource, MlflowResource, PipelineSettings
from ..synthetic import match_ground_truth, read_ground_truth
from .training import labelled_episodes, training_set

BREAK_MODEL_KEY = dg.AssetKey(["ml", "break_model"])
FOLDS_TABLE = "break_model_folds"
OOF_TABLE = "break_model_oof"
MIN_TRAIN_SESSIONS = 5  # the first walk-forward fold trains on this many sessions
SERVING_METRIC = "wf_cal_brier_skill"  # pre-set: calibrated walk-forward Brier skill vs the base rate
BEATS_BASE_RATE = "BEATS_BASE_RATE"

FOLD_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.Utf8,
    "scheme": pl.Utf8,
    "fold": pl.Int64,
    "test_session": pl.Date,
    "n_train": pl.Int64,
    "n_test": pl.Int64,
    "purged": pl.Int64,
    "auc": pl.Float64,
    "log_loss": pl.Float64,
    "log_loss_base": pl.Float64,
    "brier": pl.Float64,
    "brier_base": pl.Float64,
    "ece": pl.Float64,
}


def fold_table(run_id: str, validation: dict) -> pl.DataFrame:
    rows = [
        {"run_id": run_id, "scheme": scheme, "purged": fold["n_purged"], **{k: fold.get(k) for k in FOLD_SCHEMA if k in fold}}
        for scheme, result in validation.items() for fold in result.folds
    ]
    frame = pl.DataFrame(rows, schema_overrides={"test_session": pl.Utf8}) if rows else pl.DataFrame(schema=FOLD_SCHEMA)
    return frame.with_columns(pl.col("test_session").cast(pl.Utf8).str.to_date()).select(list(FOLD_SCHEMA)).cast(FOLD_SCHEMA)


OOF_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.Utf8, "episode_id": pl.Utf8, "session": pl.Date, "ts_ns": pl.Int64, "level_kind": pl.Utf8,
    "direction": pl.Utf8, "time_bucket": pl.Utf8, "label": pl.Utf8, "fold": pl.Int64,
    "p_break": pl.Float64, "base_break": pl.Float64,
}


def out_of_fold(episodes: pl.DataFrame, walk_forward, run_id: str = "") -> pl.DataFrame:
    """Walk-forward held-out predictions: each episode scored by a model that never saw its session."""
    held_out = episodes[walk_forward.oof_idx].select("episode_id", "session", "ts_ns", "level_kind", "direction",
                                                     "time_bucket", "label")
    return held_out.with_columns(
        pl.lit(run_id).alias("run_id"),
        pl.Series("fold", walk_forward.oof_fold.astype(np.int64)),
        pl.Series("p_break", 1.0 / (1.0 + np.exp(-walk_forward.oof_raw))),
        pl.Series("base_break", walk_forward.oof_base_rate),
    ).select(list(OOF_SCHEMA)).cast(OOF_SCHEMA)


def model_vs_oracle(predictions: pl.DataFrame, truth_root: Path) -> dict:
    """AUC of the model's out-of-fold p(BREAK) vs the simulator's true p_break on the same held-out
    episodes (synthetic market only). BREAK = 1; CHOP and REJECT = 0, as in retrieval_evaluation."""
    truth = read_ground_truth(truth_root, sorted(set(predictions["session"].to_list())))
    return oracle_comparison(predictions, match_ground_truth(predictions, truth))


@dg.asset(
    key=BREAK_MODEL_KEY,
    deps=[dg.AssetKey(["gold", "episodes"])],
    group_name="ml",
    kinds={"lightgbm", "mlflow"},
    owners=OWNERS,
    code_version="break-model-1",
    # Unpartitioned (trained on every session present, validated walk-forward); it rides along in range runs.
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[dg.AssetCheckSpec(BEATS_BASE_RATE, asset=BREAK_MODEL_KEY,
                                   description="Walk-forward calibrated Brier beats the base-rate predictor")],
)
def break_model(context: dg.AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource,
                settings: PipelineSettings, market_data: MarketDataResource) -> dg.MaterializeResult:
    """LightGBM on episode vectors: multiclass BREAK/REJECT/CHOP and binary BREAK vs REJECT,
    validated walk-forward (expanding) and leave-one-day-out with purging and an embargo,
    calibrated out of fold, logged to MLflow and registered; promoted to serving only if it
    beats the current serving model on calibrated walk-forward Brier skill."""
    store, home = lake.lake(), mlflow.home_path()
    episodes = labelled_episodes(store)
    sessions = episodes["session"].n_unique() if episodes.height else 0
    if sessions < MIN_TRAIN_SESSIONS + 1:
        reason = f"{sessions} labelled sessions < {MIN_TRAIN_SESSIONS + 1} needed for one walk-forward fold"
        context.log.warning(f"break model not trained: {reason}")
        return dg.MaterializeResult(
            metadata={"trained": False, "reason": reason},
            check_results=[dg.AssetCheckResult(check_name=BEATS_BASE_RATE, passed=True, severity=dg.AssetCheckSeverity.WARN,
                                               metadata={"skipped": reason})],
        )
    data = training_set(episodes)
    config = BreakModelConfig(min_train_sessions=MIN_TRAIN_SESSIONS)
    model = train_break_model(data.X, data.episodes["label"].to_list(), data.sessions(),
                              data.episodes["label_end_ns"].to_numpy(), data.episodes["ts_ns"].to_numpy(),
                              data.feature_names, config)
    with tempfile.TemporaryDirectory() as scratch:
        png = reliability_png(model.reliability_tables(), Path(scratch) / "reliability.png",
                              "Break model reliability (out of fold)")
        run_id = log_training_run(model, home, params={"feature_set_tier": data.tier, "dimensions": len(data.dims)},
                                  config_hash=f"{settings.config_hash()}-{config.fingerprint()}",
                                  data_range=data.describe(), reliability_png_path=png)
    for session, per_session in fold_table(run_id, model.validation).group_by("test_session"):
        store.write_frames("ml", FOLDS_TABLE, session[0], [per_session], FOLD_SCHEMA)
    held_out = out_of_fold(data.episodes, model.validation[WALK_FORWARD], run_id)
    for session, per_session in held_out.group_by("session"):
        store.write_frames("ml", OOF_TABLE, session[0], [per_session], OOF_SCHEMA)

    current = serving_run_id(home)
    pooled = model.pooled_metrics()
    promote, why = serving_decision(pooled, run_metrics(home, current) if current else None, metric=SERVING_METRIC)
    if promote:
        set_serving_alias(home, run_id)
    headline = {k: float(v) for k, v in pooled.items()
                if k.startswith(("wf_", "lodo_")) and k.split("_", 1)[1].removeprefix("cal_") in
                ("auc", "brier", "brier_base", "brier_skill", "ece", "log_loss", "log_loss_base", "precision_at")
                and np.isfinite(v)}
    context.log.info(f"break model run {run_id}: {headline}; serving: {why}")
    oracle = {}
    if (truth_root := market_data.ground_truth_root()) is not None:
        oracle = model_vs_oracle(held_out, truth_root)
        context.log.info(f"break model vs the simulator's oracle on the same held-out episodes: {oracle}")
    beats = pooled.get(SERVING_METRIC, float("nan"))
    return dg.MaterializeResult(
        metadata={
            "trained": True,
            "mlflow_run_id": run_id,
            "mlflow_ui": run_ui_command(home),
            "promoted_to_serving": promote,
            "serving_decision": why,
            **data.describe(),
            **{k: dg.MetadataValue.float(v) for k, v in headline.items()},
            **{f"oracle_{k}": v for k, v in oracle.items()},
        },
        check_results=[dg.AssetCheckResult(check_name=BEATS_BASE_RATE, passed=bool(np.isfinite(beats) and beats > 0),
                                           severity=dg.AssetCheckSeverity.WARN,
                                           metadata={SERVING_METRIC: dg.MetadataValue.float(float(beats))})],
    )


ml_assets = [break_model]
