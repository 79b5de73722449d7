"""Walk-forward evaluation of retrieval: each session's episodes queried against its as-of index.

Honest by construction: session S is answered only by the index and stats of S's own
partitions, which hold sessions strictly before S. The predictor is p(BREAK) of the
Dirichlet posterior; the yardstick is the partition base rate the posterior shrinks to.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from ..lake import Lake
from ..lib.metrics import binary_report, reliability_table
from ..lib.similarity_index import OUTCOMES
from .as_of import AsOf

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
}


def walk_forward_predictions(store: Lake, sessions: list[dt.date]) -> pl.DataFrame:
    """One row per labelled episode of each session that has an as-of index with history."""
    frames = []
    for session in sessions:
        if not (store.has_partition("gold", "episodes", session) and store.has_partition("gold", "normalization_stats", session)):
            continue
        episodes = store.read("gold", "episodes", session).filter(pl.col("label").is_not_null())
        if episodes.height == 0:
            continue
        results = AsOf(store, session).answer(episodes)
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
            })
        frames.append(pl.DataFrame(rows, schema=PREDICTION_SCHEMA))
    return pl.concat(frames) if frames else pl.DataFrame(schema=PREDICTION_SCHEMA)


def _report(frame: pl.DataFrame) -> dict:
    y = (frame["label"] == "BREAK").to_numpy().astype(float)
    return binary_report(y, frame["p_break"].to_numpy(), frame["base_break"].to_numpy())


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


def oracle_comparison(predictions: pl.DataFrame, matched: pl.DataFrame) -> dict:
    """On the synthetic market: AUC of a predictor (retrieval, the model) vs AUC of the simulator's true p_break on the
    same episodes (those matched to a planned touch), and their ratio. BREAK = 1, else 0."""
    joined = predictions.join(matched.select("episode_id", "gt_planned", "gt_p_break"), on="episode_id", how="inner")
    same = joined.filter(pl.col("gt_planned").fill_null(False) & pl.col("gt_p_break").is_not_null())
    if same.height < 10:
        return {"n_matched": same.height, "note": "too few episodes matched to planned touches"}
    y = (same["label"] == "BREAK").to_numpy().astype(float)
    predictor = binary_report(y, same["p_break"].to_numpy(), same["base_break"].to_numpy())["auc"]
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
    return out
