"""Research report assets (SPEC §9): segment base rates, time stratification, level specificity,
feature interactions — JSON in the lake, a run each in MLflow, headline numbers in the UI."""

import dagster as dg
import numpy as np
import polars as pl

from ..lib.analyses import CONDITIONAL, UNCONDITIONAL, feature_interactions, scored_by_segment, segment_base_rates
from ..lib.break_model import CHOP_IDX, WALK_FORWARD, BreakModelConfig, class_indices, train_break_model
from ..lib.metrics import roc_auc
from ..resources import LakeResource, MlflowResource
from .assets import BREAK_PREDICTIONS_KEY, PREDICTIONS_TABLE
from .reporting import REPORT_DEFAULTS, empty, publish, read_table
from .training import complete_training_set, labelled_episodes

MIN_TRAIN_SESSIONS = 5  # a per-bucket model's first walk-forward fold trains on this many sessions
MIN_BUCKET_MODEL_EPISODES = 150  # below this a per-bucket model's walk-forward folds are too thin to compare

# Hypothesised interactions (SPEC §9): feature pairs a trader would name.
HYPOTHESES = {
    "setup x proximity": ("attempt_index", "d_atr"),
    "dealer x gamma": ("gex_band_2", "net_gex"),
    "flow x barrier": ("ofi_60s", "defending_depth"),
    "speed x wall": ("approach_velocity", "wall_ratio_30min"),
    "aggression x barrier": ("tape_near_imbalance_toward_60s", "defending_depth"),
}


@dg.asset(key=dg.AssetKey(["reports", "segment_base_rates"]), deps=[dg.AssetKey(["gold", "episodes"])], **REPORT_DEFAULTS)
def segment_base_rates_report(context: dg.AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource):
    """BREAK/REJECT/CHOP shares by level kind × direction × time bucket and by coarser segments
    (direction; level kind × direction), each with a Wilson 90% interval and a binomial test
    against the pooled BREAK share."""
    store = lake.lake()
    episodes = labelled_episodes(store)
    if episodes.height == 0:
        return empty("no labelled episodes")
    report = {
        "episodes": episodes.height,
        "pooled_break_share": float((episodes["label"] == "BREAK").mean()),
        "by_direction": segment_base_rates(episodes, ("direction",)),
        "by_level_kind_direction": segment_base_rates(episodes, ("level_kind", "direction")),
        "by_level_kind_direction_bucket": segment_base_rates(episodes, ("level_kind", "direction", "time_bucket")),
    }
    by_direction = {r["direction"]: r["break_share"] for r in report["by_direction"]}
    headline = {"episodes": float(episodes.height), "pooled_break_share": report["pooled_break_share"]}
    headline |= {f"break_share_{d}": v for d, v in by_direction.items()}
    return publish(context, store, mlflow, "segment_base_rates", report, headline)


def walk_forward_predictions(store) -> pl.DataFrame:
    """The union of ml/break_predictions, labelled rows: every session scored by its as-of model."""
    predictions = read_table(store, "ml", PREDICTIONS_TABLE)
    return predictions.filter(pl.col("label").is_not_null()) if predictions.height else predictions


@dg.asset(key=dg.AssetKey(["reports", "level_specificity"]), deps=[BREAK_PREDICTIONS_KEY], **REPORT_DEFAULTS)
def level_specificity_report(context: dg.AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource):
    """Per level kind: base rates, and how well the as-of model's walk-forward predictions rank and
    calibrate on that level alone — p(BREAK | decisive) on decisive episodes vs the decisive base rate,
    and the unconditional p(BREAK) on all episodes vs the unconditional base rate (like with like)."""
    store = lake.lake()
    predictions = walk_forward_predictions(store)
    if predictions.height == 0:
        return empty("no walk-forward model predictions yet (ml/break_predictions)")
    report = {
        "held_out_episodes": predictions.height,
        "base_rates": segment_base_rates(predictions, ("level_kind",)),
        "model_by_level_kind": scored_by_segment(predictions, "level_kind", CONDITIONAL),
        "unconditional_model_by_level_kind": scored_by_segment(predictions, "level_kind", UNCONDITIONAL),
        "definitions": {"model_by_level_kind": CONDITIONAL["scope"], "unconditional_model_by_level_kind": UNCONDITIONAL["scope"]},
    }
    headline = {f"auc_{k}": v["auc"] for k, v in report["model_by_level_kind"].items() if "auc" in v}
    headline |= {f"brier_skill_{k}": v["brier_skill"] for k, v in report["model_by_level_kind"].items() if "brier_skill" in v}
    return publish(context, store, mlflow, "level_specificity", report, headline)


@dg.asset(key=dg.AssetKey(["reports", "time_stratification"]), deps=[BREAK_PREDICTIONS_KEY], **REPORT_DEFAULTS)
def time_stratification_report(context: dg.AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource):
    """Per time bucket: base rates and the global as-of model's walk-forward scores (like with like, as in
    level_specificity); and where a bucket has enough episodes, a model trained on that bucket alone
    (walk-forward), compared with the global model by AUC of p(BREAK | decisive) on the same decisive episodes."""
    store = lake.lake()
    predictions = walk_forward_predictions(store)
    episodes = labelled_episodes(store)
    if predictions.height == 0:
        return empty("no walk-forward model predictions yet (ml/break_predictions)")
    report = {
        "base_rates": segment_base_rates(episodes, ("time_bucket",)),
        "global_model_by_bucket": scored_by_segment(predictions, "time_bucket", CONDITIONAL),
        "global_unconditional_model_by_bucket": scored_by_segment(predictions, "time_bucket", UNCONDITIONAL),
        "per_bucket_models": {},
    }
    decisive = predictions.filter(pl.col("label") != "CHOP")
    for (bucket,), group in episodes.group_by("time_bucket", maintain_order=True):
        if group.height < MIN_BUCKET_MODEL_EPISODES or group["session"].n_unique() < MIN_TRAIN_SESSIONS + 2:
            report["per_bucket_models"][bucket] = {"n": group.height, "note": "too few episodes for its own model"}
            continue
        data, _ = complete_training_set(group)
        model = train_break_model(data.X, data.episodes["label"].to_list(), data.sessions(),
                                  data.episodes["label_end_ns"].to_numpy(), data.episodes["ts_ns"].to_numpy(),
                                  data.feature_names, BreakModelConfig(min_train_sessions=MIN_TRAIN_SESSIONS,
                                                                       leave_one_day_out=False))
        wf = model.validation[WALK_FORWARD]
        decisive_held = class_indices(data.episodes["label"].to_list())[wf.oof_idx] != CHOP_IDX
        own = pl.DataFrame({"episode_id": data.episodes["episode_id"].gather(wf.oof_idx[decisive_held]),
                            "p_bucket": wf.oof_raw[decisive_held]})
        same = decisive.join(own, on="episode_id", how="inner")
        y = (same["label"] == "BREAK").to_numpy().astype(float)
        report["per_bucket_models"][bucket] = {"n_compared": same.height, "scope": CONDITIONAL["scope"],
                                               "auc_global": roc_auc(y, same["p_break_decisive"].to_numpy()),
                                               "auc_bucket_model": roc_auc(y, same["p_bucket"].to_numpy())}
    headline = {f"auc_{k}": v["auc"] for k, v in report["global_model_by_bucket"].items() if "auc" in v}
    return publish(context, store, mlflow, "time_stratification", report, headline)


@dg.asset(key=dg.AssetKey(["reports", "feature_interactions"]), deps=[dg.AssetKey(["gold", "episodes"])], **REPORT_DEFAULTS)
def feature_interactions_report(context: dg.AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource):
    """Do pairs of features matter together beyond their separate effects? Likelihood-ratio tests of
    a product term in a logistic model of BREAK vs REJECT: the hypothesised pairs, then every pair
    among the 12 features most associated with the outcome, with Benjamini–Hochberg FDR."""
    store = lake.lake()
    episodes = labelled_episodes(store)
    decisive = episodes.filter(pl.col("label") != "CHOP") if episodes.height else episodes
    if decisive.height < 50:
        return empty(f"{decisive.height} decisive episodes < 50")
    data, incomplete = complete_training_set(decisive)
    X, y = data.X, (data.episodes["label"] == "BREAK").to_numpy().astype(float)
    # Candidates for discovery: the features most associated with the outcome on their own
    # (absolute Spearman correlation), so 66 pairs are tested rather than thousands.
    ranks = np.argsort(np.argsort(X, axis=0), axis=0).astype(float)
    centred = ranks - ranks.mean(axis=0)
    denom = np.sqrt((centred**2).sum(axis=0)) * np.sqrt(((y - y.mean()) ** 2).sum())
    association = np.abs(centred.T @ (y - y.mean())) / np.where(denom > 0, denom, np.inf)
    candidates = [data.feature_names[i] for i in np.argsort(-association)[:12]]
    report = {"decisive_episodes": data.episodes.height, "left_out_incomplete": incomplete, "tier": data.tier,
              "candidates": candidates,
              **feature_interactions(X, y, data.feature_names, HYPOTHESES, candidates)}
    headline = {f"p_{k.replace(' ', '_')}": v["p_value"] for k, v in report["hypothesised"].items()}
    headline["significant_pairs"] = float(len(report["significant_at_fdr"]))
    return publish(context, store, mlflow, "feature_interactions", report, headline)


analysis_assets = [segment_base_rates_report, level_specificity_report, time_stratification_report,
                   feature_interactions_report]
