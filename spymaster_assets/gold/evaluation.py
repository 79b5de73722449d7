"""Walk-forward evaluation of retrieval: each session's episodes queried against its as-of index.

Honest by construction: session S is answered only by the index, metric and stats of S's own
partitions, which hold sessions strictly before S. The predictor is p(BREAK) of the
Dirichlet posterior; the yardsticks, all scored on the same held-out episodes, are

- retrieval with plain robust-z cosine (the baseline metric, same index, same rules);
- the base rate the posterior shrinks to;
- when the "model" tier has written ml/break_predictions (columns episode_id, session,
  p_break, p_break_baseline, baseline_feature): the as-of break model and its best
  single-feature baseline, joined on episode_id (the comparison then covers the episodes
  both answered);
- on the synthetic market, the simulator's own p_break on planned touches (the oracle).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from ..lake import Lake
from ..lib.metrics import binary_report, reliability_table
from ..lib.retrieval import RetrievalConfig
from ..lib.similarity_index import GRANULARITIES, OUTCOMES, IndexConfig
from .as_of import LEARNED_METRIC, AsOf

BREAK_PREDICTIONS = ("ml", "break_predictions")  # the model tier's table (layer, name)

PREDICTION_SCHEMA: dict[str, pl.DataType] = {
    "episode_id": pl.Utf8,
    "session": pl.Date,
    "ts_ns": pl.Int64,
    "level_kind": pl.Utf8,
    "direction": pl.Utf8,
    "time_bucket": pl.Utf8,
    "label": pl.Utf8,
    "p_break": pl.Float64,
    "p_reject": pl.Float64,
    "p_chop": pl.Float64,
    "base_break": pl.Float64,
    "p_break_low": pl.Float64,
    "p_break_high": pl.Float64,
    "effective_n": pl.Float64,
    "insufficient_history": pl.Boolean,
    "granularity": pl.Utf8,
    "n_neighbours": pl.Int64,
    "similarity_p10": pl.Float64,  # of the answer's kept neighbours
    "similarity_median": pl.Float64,
    "similarity_p90": pl.Float64,
}


def walk_forward_predictions(store: Lake, sessions: list[dt.date], metric: str = LEARNED_METRIC,
                             config: RetrievalConfig | None = None, index_config: IndexConfig | None = None) -> pl.DataFrame:
    """One row per labelled episode of each session that has an as-of index with history,
    answered with the learned metric (served) or plain robust-z cosine (`metric`)."""
    frames = []
    for session in sessions:
        if not (store.has_partition("gold", "episodes", session) and store.has_partition("gold", "normalization_stats", session)):
            continue
        episodes = store.read("gold", "episodes", session).filter(pl.col("label").is_not_null())
        if episodes.height == 0:
            continue
        results = AsOf(store, session, config=config or RetrievalConfig(), metric=metric,
                       index_config=index_config or IndexConfig()).answer(episodes)
        rows = []
        for episode, result in zip(episodes.iter_rows(named=True), results):
            if result is None or result.partition is None:
                continue  # nothing earlier of this tier/direction: not a prediction, not scored
            rows.append({
                **{k: episode[k] for k in ("episode_id", "session", "ts_ns", "level_kind", "direction", "time_bucket", "label")},
                "p_break": result.probabilities["BREAK"],
                "p_reject": result.probabilities["REJECT"],
                "p_chop": result.probabilities["CHOP"],
                "base_break": result.base_rates["BREAK"],
                "p_break_low": result.p_break_interval[0],
                "p_break_high": result.p_break_interval[1],
                "effective_n": result.effective_n,
                "insufficient_history": result.insufficient_history,
                "granularity": result.partition.granularity,
                "n_neighbours": result.n_neighbours,
                **dict(zip(("similarity_p10", "similarity_median", "similarity_p90"),
                           result.similarity_p10_median_p90 or (None, None, None))),
            })
        frames.append(pl.DataFrame(rows, schema=PREDICTION_SCHEMA))
    return pl.concat(frames) if frames else pl.DataFrame(schema=PREDICTION_SCHEMA)


def _report(frame: pl.DataFrame) -> dict:
    y = (frame["label"] == "BREAK").to_numpy().astype(float)
    return binary_report(y, frame["p_break"].to_numpy(), frame["base_break"].to_numpy())


def neighbour_similarity(predictions: pl.DataFrame) -> dict:
    """How alike answers' neighbours are: quantiles over answers of each answer's median, p10 and p90."""
    answered = predictions.filter(pl.col("similarity_median").is_not_null())
    if answered.height == 0:
        return {"answers_with_neighbours": 0}
    out = {"answers_with_neighbours": answered.height}
    for column in ("similarity_median", "similarity_p10", "similarity_p90"):
        q10, q50, q90 = np.quantile(answered[column].to_numpy(), [0.1, 0.5, 0.9])
        out[column.removeprefix("similarity_")] = {"p10": float(q10), "median": float(q50), "p90": float(q90)}
    return out


def fallback_rates(predictions: pl.DataFrame) -> dict[str, float]:
    """Share of answers served by each granularity of the partition fallback (finest first)."""
    if predictions.height == 0:
        return {}
    counts = dict(predictions["granularity"].value_counts().iter_rows())
    return {g: counts.get(g, 0) / predictions.height for g in GRANULARITIES}


def evaluation_report(predictions: pl.DataFrame, min_group: int = 10) -> dict:
    """Pooled and per-segment metrics of p(BREAK) vs the base-rate predictor (BREAK = 1;
    REJECT and CHOP = 0), the reliability table, and the outcome mix."""
    if predictions.height == 0:
        return {"n": 0, "note": "no session had earlier history: nothing to evaluate"}
    report = {
        "n": predictions.height,
        "sessions": predictions["session"].n_unique(),
        "first_session": str(predictions["session"].min()),
        "last_session": str(predictions["session"].max()),
        "outcome_shares": {o: float((predictions["label"] == o).mean()) for o in OUTCOMES},
        "insufficient_history_share": float(predictions["insufficient_history"].mean()),
        "median_effective_n": float(predictions["effective_n"].median()),
        "granularity_used": dict(predictions["granularity"].value_counts().iter_rows()),
        "fallback_rates": fallback_rates(predictions),
        "neighbour_similarity": neighbour_similarity(predictions),
        "pooled": _report(predictions),
        "reliability": reliability_table((predictions["label"] == "BREAK").to_numpy().astype(float),
                                         predictions["p_break"].to_numpy()).to_dicts(),
    }
    for segment in ("level_kind", "direction"):
        report[f"by_{segment}"] = {
            key[0]: _report(group) for key, group in predictions.group_by(segment, maintain_order=True)
            if group.height >= min_group
        }
    return report


def oracle_comparison(predictions: pl.DataFrame, matched: pl.DataFrame, score: str = "p_break") -> dict:
    """On the synthetic market: AUC of a predictor (column `score`: retrieval, the model) vs AUC of the
    simulator's true p_break on the same episodes (those matched to a planned touch), and their ratio.
    BREAK = 1, else 0."""
    joined = predictions.join(matched.select("episode_id", "gt_planned", "gt_p_break"), on="episode_id", how="inner")
    same = joined.filter(pl.col("gt_planned").fill_null(False) & pl.col("gt_p_break").is_not_null()
                         & pl.col(score).is_not_null())
    if same.height < 10:
        return {"n_matched": same.height, "note": "too few episodes matched to planned touches"}
    y = (same["label"] == "BREAK").to_numpy().astype(float)
    predictor = binary_report(y, same[score].to_numpy(), same["base_break"].to_numpy())["auc"]
    oracle = binary_report(y, same["gt_p_break"].to_numpy(), same["base_break"].to_numpy())["auc"]
    return {
        "n_matched": same.height,
        "n_episodes": predictions.height,
        "predictor_auc": predictor,
        "oracle_auc": oracle,
        "auc_ratio": predictor / oracle if oracle else float("nan"),
        # Share of the oracle's edge over a coin flip that retrieval recovers.
        "edge_ratio": (predictor - 0.5) / (oracle - 0.5) if oracle and oracle != 0.5 else float("nan"),
    }


def headline(report: dict) -> dict[str, float]:
    pooled = report.get("pooled", {})
    keys = ("n", "auc", "brier", "brier_base", "brier_skill", "log_loss", "log_loss_base", "ece", "ece_base")
    out = {k: float(pooled[k]) for k in keys if k in pooled and pooled[k] is not None and np.isfinite(pooled[k])}
    oracle = report.get("oracle", {})
    out |= {k: float(oracle[k]) for k in ("oracle_auc", "predictor_auc", "auc_ratio", "edge_ratio")
            if k in oracle and np.isfinite(oracle[k])}
    similarity = report.get("neighbour_similarity", {}).get("median", {})
    if "median" in similarity:
        out["median_neighbour_similarity"] = float(similarity["median"])
    fallbacks = report.get("fallback_rates", {})
    if "direction" in fallbacks:
        out["coarsest_fallback_share"] = float(fallbacks["direction"])
    return out


def read_break_predictions(store: Lake) -> pl.DataFrame | None:
    """The model tier's as-of predictions (every written session), or None when the table is absent."""
    layer, table = BREAK_PREDICTIONS
    sessions = store.partitions(layer, table)
    if not sessions:
        return None
    columns = ["episode_id", "p_break", "p_break_baseline", "baseline_feature"]
    frames = [store.read(layer, table, day).select(columns) for day in sessions if store.has_partition(layer, table, day)]
    return pl.concat(frames, how="vertical_relaxed") if frames else None


# Predictor name → column of the comparison frame.
PREDICTORS = {
    "retrieval (learned metric)": "p_break",
    "retrieval (robust-z cosine)": "p_break_plain_cosine",
    "base rate": "base_break",
    "break model (as of D)": "p_break_model",
    "best single feature": "p_break_single_feature",
}


def comparison_frame(learned: pl.DataFrame, plain: pl.DataFrame, model: pl.DataFrame | None) -> pl.DataFrame:
    """One row per held-out episode that every available predictor answered, one column per predictor."""
    frame = learned.join(plain.select("episode_id", pl.col("p_break").alias("p_break_plain_cosine"),
                                      pl.col("similarity_median").alias("similarity_median_plain_cosine")),
                         on="episode_id", how="inner")
    if model is not None:
        frame = frame.join(model.select("episode_id", pl.col("p_break").alias("p_break_model"),
                                        pl.col("p_break_baseline").alias("p_break_single_feature"),
                                        "baseline_feature"), on="episode_id", how="inner")
    return frame


def comparison_table(frame: pl.DataFrame, matched: pl.DataFrame | None = None) -> list[dict]:
    """Every available predictor on the same episodes: AUC, Brier, log loss, ECE, skill vs base rate,
    and (synthetic market) AUC vs the oracle's on the planned touches among them."""
    if frame.height == 0:
        return []
    y = (frame["label"] == "BREAK").to_numpy().astype(float)
    rows = []
    for name, column in PREDICTORS.items():
        if column not in frame.columns:
            continue
        metrics = binary_report(y, frame[column].to_numpy(), frame["base_break"].to_numpy())
        row = {"predictor": name, "n": frame.height,
               **{k: metrics[k] for k in ("auc", "brier", "log_loss", "ece", "brier_skill", "log_loss_skill")}}
        if column == "p_break_single_feature":
            row["feature"] = ", ".join(sorted(set(frame["baseline_feature"].drop_nulls().to_list())))
        if matched is not None:
            oracle = oracle_comparison(frame, matched, column)
            row |= {k: oracle[k] for k in ("n_matched", "oracle_auc", "predictor_auc", "auc_ratio", "edge_ratio")
                    if k in oracle}
        rows.append(row)
    return rows
