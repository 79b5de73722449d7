"""Research report assets (SPEC §9): segment base rates, time stratification, level specificity,
feature interactions — JSON in the lake, a run each in MLflow, headline numbers in the UI."""

import dagster as dg
import numpy as np
import polars as pl

from ..lake import Lake, write_json_atomic
from ..lib.analyses import feature_interactions, scored_by_segment, segment_base_rates
from ..lib.break_model import WALK_FORWARD, BreakModelConfig, train_break_model
from ..lib.metrics import roc_auc
from ..lib.mlflow_tracking import log_report
from ..partitioned import OWNERS
from ..resources import LakeResource, MlflowResource
from .assets import BREAK_MODEL_KEY, MIN_TRAIN_SESSIONS, OOF_TABLE, out_of_fold
from .training import labelled_episodes, training_set

REPORT_DEFAULTS = dict(
    group_name="reports",
    kinds={"json", "mlflow"},
    owners=OWNERS,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
MIN_BUCKET_MODEL_EPISODES = 150  # below this a per-bucket model's walk-forward folds are too thin to compare

# Hypothesised interactions (SPEC §9): feature pairs a trader would name.
HYPOTHESES = {
    "setup x proximity": ("attempt_index", "d_atr"),
    "dealer x gamma": ("gex_band_2", "net_gex"),
    "flow x barrier": ("ofi_60s", "defending_depth"),
    "speed x wall": ("approach_velocity", "wall_ratio_30min"),
    "aggression x barrier": ("tape_near_imbalance_toward_60s", "defending_depth"),
}


def read_table(store: Lake, layer: str, table: str) -> pl.DataFrame:
    frames = [store.read(layer, table, day) for day in store.partitions(layer, table)]
    return pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()


def publish(context, store: Lake, mlflow: MlflowResource, name: str, report: dict, headline: dict[str, float]):
    path = write_json_atomic(store.root / "reports" / name / "report.json", report)
    run_id = log_report(mlflow.home_path(), name, path, headline)
    context.log.info(f"{name}: {headline}")
    finite = {k: dg.MetadataValue.float(float(v)) for k, v in headline.items() if v is not None and np.isfinite(v)}
    return dg.MaterializeResult(metadata={"report": dg.MetadataValue.path(str(path)), "mlflow_run_id": run_id, **finite})


def empty(reason: str) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"computed": False, "reason": reason})


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


@dg.asset(key=dg.AssetKey(["reports", "level_specificity"]), deps=[BREAK_MODEL_KEY], **REPORT_DEFAULTS)
def level_specificity_report(context: dg.AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource):
    """Per level kind: base rates, and how well the break model's walk-forward held-out p(BREAK)
    ranks and calibrates on that level alone (AUC, Brier vs the fold base rate)."""
    store = lake.lake()
    oof = read_table(store, "ml", OOF_TABLE)
    if oof.height == 0:
        return empty("no held-out model predictions yet (ml/break_model not trained)")
    report = {
        "held_out_episodes": oof.height,
        "base_rates": segment_base_rates(oof, ("level_kind",)),
        "model_by_level_kind": scored_by_segment(oof, "level_kind"),
    }
    headline = {f"auc_{k}": v["auc"] for k, v in report["model_by_level_kind"].items() if "auc" in v}
    return publish(context, store, mlflow, "level_specificity", report, headline)


@dg.asset(key=dg.AssetKey(["reports", "time_stratification"]), deps=[BREAK_MODEL_KEY], **REPORT_DEFAULTS)
def time_stratification_report(context: dg.AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource):
    """Per time bucket: base rates and the global model's held-out AUC/Brier; and where a bucket has
    enough episodes, a model trained on that bucket alone, compared on the same held-out episodes."""
    store = lake.lake()
    oof = read_table(store, "ml", OOF_TABLE)
    episodes = labelled_episodes(store)
    if oof.height == 0:
        return empty("no held-out model predictions yet (ml/break_model not trained)")
    report = {
        "base_rates": segment_base_rates(episodes, ("time_bucket",)),
        "global_model_by_bucket": scored_by_segment(oof, "time_bucket"),
        "per_bucket_models": {},
    }
    for (bucket,), group in episodes.group_by("time_bucket", maintain_order=True):
        if group.height < MIN_BUCKET_MODEL_EPISODES or group["session"].n_unique() < MIN_TRAIN_SESSIONS + 2:
            report["per_bucket_models"][bucket] = {"n": group.height, "note": "too few episodes for its own model"}
            continue
        data = training_set(group)
        model = train_break_model(data.X, data.episodes["label"].to_list(), data.sessions(),
                                  data.episodes["label_end_ns"].to_numpy(), data.episodes["ts_ns"].to_numpy(),
                                  data.feature_names, BreakModelConfig(min_train_sessions=MIN_TRAIN_SESSIONS,
                                                                       leave_one_day_out=False))
        own = out_of_fold(data.episodes, model.validation[WALK_FORWARD])
        same = oof.join(own.select("episode_id", pl.col("p_break").alias("p_bucket")), on="episode_id", how="inner")
        y = (same["label"] == "BREAK").to_numpy().astype(float)
        report["per_bucket_models"][bucket] = {"n_compared": same.height,
                                               "auc_global": roc_auc(y, same["p_break"].to_numpy()),
                                               "auc_bucket_model": roc_auc(y, same["p_bucket"].to_numpy())}
    headline = {f"auc_{k}": v["auc"] for k, v in report["global_model_by_bucket"].items() if "auc" in v}
    return publish(context, store, mlflow, "time_stratification", report, headline)


@dg.asset(key=dg.AssetKey(["reports", "feature_interactions"]), deps=[BREAK_MODEL_KEY], **REPORT_DEFAULTS)
def feature_interactions_report(context: dg.AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource):
    """Do pairs of features matter together beyond their separate effects? Likelihood-ratio tests of
    a product term in a logistic model of BREAK vs REJECT: the hypothesised pairs, then every pair
    among the 12 features most associated with the outcome, with Benjamini–Hochberg FDR."""
    store = lake.lake()
    episodes = labelled_episodes(store)
    decisive = episodes.filter(pl.col("label") != "CHOP") if episodes.height else episodes
    if decisive.height < 50:
        return empty(f"{decisive.height} decisive episodes < 50")
    data = training_set(decisive)
    X, y = data.X, (decisive["label"] == "BREAK").to_numpy().astype(float)
    # Candidates for discovery: the features most associated with the outcome on their own
    # (absolute Spearman correlation), so 66 pairs are tested rather than thousands.
    ranks = np.argsort(np.argsort(X, axis=0), axis=0).astype(float)
    centred = ranks - ranks.mean(axis=0)
    denom = np.sqrt((centred**2).sum(axis=0)) * np.sqrt(((y - y.mean()) ** 2).sum())
    association = np.abs(centred.T @ (y - y.mean())) / np.where(denom > 0, denom, np.inf)
    candidates = [data.feature_names[i] for i in np.argsort(-association)[:12]]
    report = {"decisive_episodes": decisive.height, "tier": data.tier, "candidates": candidates,
              **feature_interactions(X, y, data.feature_names, HYPOTHESES, candidates)}
    headline = {f"p_{k.replace(' ', '_')}": v["p_value"] for k, v in report["hypothesised"].items()}
    headline["significant_pairs"] = float(len(report["significant_at_fdr"]))
    return publish(context, store, mlflow, "feature_interactions", report, headline)


analysis_assets = [segment_base_rates_report, level_specificity_report, time_stratification_report,
                   feature_interactions_report]
