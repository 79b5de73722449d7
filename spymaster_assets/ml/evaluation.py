"""Reports on the as-of break model: the walk-forward evaluation (the union of ml/break_predictions)
and leave-one-day-out over a bounded window (more training data per fold; never a forecast)."""


from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from ..gold.evaluation import oracle_comparison
from ..lib.analyses import CONDITIONAL, UNCONDITIONAL, model_evaluation
from ..lib.break_model import BreakModelConfig, leave_one_day_out
from ..lib.metrics import reliability_png, reliability_table
from ..resources import LakeResource, MarketDataResource, MlflowResource
from ..synthetic import match_ground_truth, read_ground_truth
from .reporting import REPORT_DEFAULTS, empty, publish, read_table
from .training import complete_training_set, read_window

BREAK_PREDICTIONS_KEY = dg.AssetKey(["ml", "break_predictions"])
LODO_SESSIONS = 60  # the report's window: its cost stays bounded however long the history grows


def model_vs_oracle(predictions: pl.DataFrame, truth_root: Path) -> dict:
    """On the synthetic market: AUC of the model's unconditional p(BREAK) vs the simulator's true
    p_break on the same walk-forward episodes (BREAK = 1; CHOP and REJECT = 0, as for retrieval)."""
    labelled = predictions.filter(pl.col("label").is_not_null())
    truth = read_ground_truth(truth_root, sorted(set(labelled["session"].to_list())))
    return oracle_comparison(labelled, match_ground_truth(labelled, truth))


@dg.asset(key=dg.AssetKey(["reports", "break_model_evaluation"]), deps=[BREAK_PREDICTIONS_KEY], **REPORT_DEFAULTS)
def break_model_evaluation(context: dg.AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource,
                           market_data: MarketDataResource):
    """Walk-forward quality of the as-of break model: every session scored by its own model (trained on
    earlier sessions only). AUC, log loss, Brier, ECE and reliability of p(BREAK | decisive) on decisive
    episodes and of the unconditional p(BREAK) on all, each vs its window base rate and beside the
    single-feature baseline; the multiclass shares vs base rates; by level kind and direction; on the
    synthetic market also vs the simulator's oracle."""
    store = lake.lake()
    predictions = read_table(store, "ml", "break_predictions")
    if predictions.height == 0:
        return empty("no walk-forward predictions yet (materialize ml/break_model and ml/break_predictions)")
    report = model_evaluation(predictions)
    if report.get("n", 0) == 0:
        return empty(report["note"])
    if (truth_root := market_data.ground_truth_root()) is not None:
        report["oracle"] = model_vs_oracle(predictions, truth_root)
    png = store.root / "reports" / "break_model_evaluation" / "reliability.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    labelled = predictions.filter(pl.col("label").is_not_null())
    decisive = labelled.filter(pl.col("label") != "CHOP")
    y_all, y_dec = ((labelled["label"] == "BREAK").to_numpy().astype(float),
                    (decisive["label"] == "BREAK").to_numpy().astype(float))
    tables = {"p(BREAK | decisive)": reliability_table(y_dec, decisive[CONDITIONAL["p"]].to_numpy()),
              "p(BREAK)": reliability_table(y_all, labelled[UNCONDITIONAL["p"]].to_numpy())}
    with_baseline = labelled.filter(pl.col("p_break_baseline").is_not_null())
    if with_baseline.height:
        tables["single-feature baseline"] = reliability_table((with_baseline["label"] == "BREAK").to_numpy().astype(float),
                                                              with_baseline["p_break_baseline"].to_numpy())
    reliability_png(tables, png, "Break model, walk-forward (each session scored by its as-of model)")
    pooled = report["pooled"]
    headline = {f"{name}_{metric}": pooled[name][metric] for name in pooled
                for metric in ("auc", "brier_skill", "log_loss_skill", "ece")}
    headline |= {"n": float(report["n"]), "sessions": float(report["sessions"]),
                 "mc_log_loss_skill": report["multiclass"]["mc_log_loss_skill"]}
    headline |= {f"oracle_{k}": v for k, v in report.get("oracle", {}).items()
                 if k in ("oracle_auc", "predictor_auc", "auc_ratio", "edge_ratio")}
    return publish(context, store, mlflow, "break_model_evaluation", report, headline,
                   {"reliability_png": dg.MetadataValue.path(str(png))})


@dg.asset(key=dg.AssetKey(["reports", "break_model_lodo"]), deps=[dg.AssetKey(["gold", "episodes"])], **REPORT_DEFAULTS)
def break_model_lodo(context: dg.AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource):
    """Leave-one-day-out over the latest 60 labelled sessions (purged, embargoed one session each side):
    each day scored by a model trained on the other days, before and after it. More data per fold than
    walk-forward, so never read as a forecast; reported per fold and pooled."""
    store = lake.lake()
    days = store.partitions("gold", "episodes")[-LODO_SESSIONS:]
    episodes = read_window(store, days)
    config = BreakModelConfig(min_train_sessions=5)
    if episodes.height == 0 or episodes["session"].n_unique() < config.min_train_sessions + 3:
        return empty(f"fewer than {config.min_train_sessions + 3} labelled sessions")
    data, incomplete = complete_training_set(episodes)
    result = leave_one_day_out(data.X, data.episodes["label"].to_list(), data.sessions(),
                               data.episodes["label_end_ns"].to_numpy(), data.episodes["ts_ns"].to_numpy(), config)
    report = {"scheme": "leave_one_day_out", "sessions": len(days), "tier": data.tier, "left_out_incomplete": incomplete,
              "first_session": str(data.episodes["session"].min()), "last_session": str(data.episodes["session"].max()),
              "pooled": result.pooled, "folds": result.folds, "reliability": result.reliability.to_dicts()}
    headline = {f"lodo_{k}": float(v) for k, v in result.pooled.items()
                if k in ("auc", "brier_skill", "log_loss_skill", "ece", "n_folds") and np.isfinite(v)}
    return publish(context, store, mlflow, "break_model_lodo", report, headline)


evaluation_assets = [break_model_evaluation, break_model_lodo]
