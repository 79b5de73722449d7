"""Probabilistic-classification metrics shared by retrieval evaluation and the break model (SPEC §9).

Every metric here scores *probabilities*, not decisions, and every report pairs the
predictor with the base-rate predictor (the class shares of the data it was fitted on),
because a Brier score of 0.21 means nothing until it is compared with what "always say
the base rate" would have scored on the same episodes.

Conventions:
- `y` is 0/1 (1 = the event, e.g. BREAK), `p` is the predicted probability of the event.
- Undefined values (AUC with one class, precision with nothing selected, an empty set) are
  NaN, never an exception, so a thin fold cannot crash a training run; pooled numbers
  are what decisions are made on.
- Multiclass Brier is the sum over classes of the squared error (range [0, 2]), the
  original Brier (1950) definition, so it reduces to 2 × binary Brier for two classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import polars as pl

LOG_LOSS_EPS = 1e-15
NAN = float("nan")


def _arrays(y, p) -> tuple[np.ndarray, np.ndarray]:
    y_arr = np.asarray(y, dtype=np.float64).ravel()
    p_arr = np.asarray(p, dtype=np.float64).ravel()
    if y_arr.shape != p_arr.shape:
        raise ValueError(f"y has {y_arr.size} values but p has {p_arr.size}")
    return y_arr, p_arr


def brier(y, p) -> float:
    """Mean squared error of the probability: mean((p − y)²)."""
    y_arr, p_arr = _arrays(y, p)
    return float(np.mean((p_arr - y_arr) ** 2)) if y_arr.size else NAN


def log_loss(y, p, eps: float = LOG_LOSS_EPS) -> float:
    """Mean negative log-likelihood, p clipped to [eps, 1 − eps] so one confident miss is finite."""
    y_arr, p_arr = _arrays(y, p)
    if not y_arr.size:
        return NAN
    clipped = np.clip(p_arr, eps, 1.0 - eps)
    return float(-np.mean(y_arr * np.log(clipped) + (1.0 - y_arr) * np.log1p(-clipped)))


def roc_auc(y, p) -> float:
    """ROC-AUC (ties count half); NaN when only one class is present (AUC is undefined)."""
    from sklearn.metrics import roc_auc_score

    y_arr, p_arr = _arrays(y, p)
    if np.unique(y_arr).size < 2:
        return NAN
    return float(roc_auc_score(y_arr, p_arr))


def _bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    # Equal-width bins on [0, 1]; p = 1.0 belongs to the last bin, not an (n_bins + 1)-th one.
    return np.minimum((np.clip(p, 0.0, 1.0) * n_bins).astype(np.int64), n_bins - 1)


def reliability_table(y, p, n_bins: int = 10) -> pl.DataFrame:
    """Per non-empty equal-width bin of p: mean prediction, observed event rate, count."""
    y_arr, p_arr = _arrays(y, p)
    bins = _bin_index(p_arr, n_bins)
    count = np.bincount(bins, minlength=n_bins)
    p_sum = np.bincount(bins, weights=p_arr, minlength=n_bins)
    y_sum = np.bincount(bins, weights=y_arr, minlength=n_bins)
    used = count > 0
    return pl.DataFrame(
        {
            "bin": np.flatnonzero(used).astype(np.int64),
            "p_mean": p_sum[used] / count[used],
            "y_rate": y_sum[used] / count[used],
            "count": count[used].astype(np.int64),
        }
    )


def ece(y, p, n_bins: int = 10) -> float:
    """Expected calibration error: Σ_bins (count/n) · |mean p − event rate|, equal-width bins."""
    y_arr, _ = _arrays(y, p)
    if not y_arr.size:
        return NAN
    table = reliability_table(y, p, n_bins)
    gaps = np.abs(table["p_mean"].to_numpy() - table["y_rate"].to_numpy())
    return float(np.sum(gaps * table["count"].to_numpy()) / y_arr.size)


def precision_at(y, p, threshold: float = 0.6) -> tuple[float, float]:
    """(precision, coverage) of the rule "call the event when p ≥ threshold".

    Coverage is the share of episodes the rule fires on: a precision of 0.9 on 1% of
    approaches is a different product from 0.7 on 30%. Precision is NaN when it never fires.
    """
    y_arr, p_arr = _arrays(y, p)
    if not y_arr.size:
        return NAN, NAN
    selected = p_arr >= threshold
    coverage = float(selected.mean())
    precision = float(y_arr[selected].mean()) if selected.any() else NAN
    return precision, coverage


def skill(score: float, base_score: float) -> float:
    """1 − score / base_score: 0 = no better than the base rate, 1 = perfect, < 0 = worse."""
    if not np.isfinite(score) or not np.isfinite(base_score) or base_score <= 0.0:
        return NAN
    return float(1.0 - score / base_score)


def binary_report(y, p, base_rate_p, n_bins: int = 10, threshold: float = 0.6) -> dict[str, float]:
    """Every binary metric for the predictor and for the base-rate predictor, plus skill scores.

    `base_rate_p` is a scalar or one value per episode (pooled out-of-fold reports carry
    the training share of each episode's own fold). Keys: n, event_rate, auc, log_loss,
    brier, ece, precision_at, coverage_at, their `_base` twins, brier_skill, log_loss_skill.
    """
    y_arr, p_arr = _arrays(y, p)
    base = np.broadcast_to(np.asarray(base_rate_p, dtype=np.float64), y_arr.shape)
    precision, coverage = precision_at(y_arr, p_arr, threshold)
    precision_base, coverage_base = precision_at(y_arr, base, threshold)
    report = {
        "n": float(y_arr.size),
        "event_rate": float(y_arr.mean()) if y_arr.size else NAN,
        "auc": roc_auc(y_arr, p_arr),
        "log_loss": log_loss(y_arr, p_arr),
        "brier": brier(y_arr, p_arr),
        "ece": ece(y_arr, p_arr, n_bins),
        "precision_at": precision,
        "coverage_at": coverage,
        # A constant predictor ranks nothing; a per-fold base rate can still rank across folds.
        "auc_base": roc_auc(y_arr, base),
        "log_loss_base": log_loss(y_arr, base),
        "brier_base": brier(y_arr, base),
        "ece_base": ece(y_arr, base, n_bins),
        "precision_at_base": precision_base,
        "coverage_at_base": coverage_base,
        "threshold": float(threshold),
    }
    report["brier_skill"] = skill(report["brier"], report["brier_base"])
    report["log_loss_skill"] = skill(report["log_loss"], report["log_loss_base"])
    return report


def _multiclass_arrays(y_idx, probs) -> tuple[np.ndarray, np.ndarray]:
    y_arr = np.asarray(y_idx, dtype=np.int64).ravel()
    p_arr = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    if p_arr.shape[0] != y_arr.size:
        raise ValueError(f"y has {y_arr.size} values but probs has {p_arr.shape[0]} rows")
    return y_arr, p_arr


def multiclass_log_loss(y_idx, probs, eps: float = LOG_LOSS_EPS) -> float:
    """Mean −log p(true class) for an (n × k) probability matrix and class indices y."""
    y_arr, p_arr = _multiclass_arrays(y_idx, probs)
    if not y_arr.size:
        return NAN
    true_p = np.clip(p_arr[np.arange(y_arr.size), y_arr], eps, 1.0)
    return float(-np.mean(np.log(true_p)))


def multiclass_brier(y_idx, probs) -> float:
    """Mean over episodes of Σ_classes (p_k − 1{y = k})² (range [0, 2])."""
    y_arr, p_arr = _multiclass_arrays(y_idx, probs)
    if not y_arr.size:
        return NAN
    onehot = np.zeros_like(p_arr)
    onehot[np.arange(y_arr.size), y_arr] = 1.0
    return float(np.mean(np.sum((p_arr - onehot) ** 2, axis=1)))


def multiclass_report(y_idx, probs, base_probs) -> dict[str, float]:
    """Multiclass log loss and Brier for the predictor and the base-rate predictor, with skills.

    `base_probs` is a k-vector of class shares or an (n × k) matrix (per-fold shares).
    """
    y_arr, p_arr = _multiclass_arrays(y_idx, probs)
    base = np.broadcast_to(np.asarray(base_probs, dtype=np.float64), p_arr.shape)
    report = {
        "mc_log_loss": multiclass_log_loss(y_arr, p_arr),
        "mc_log_loss_base": multiclass_log_loss(y_arr, base),
        "mc_brier": multiclass_brier(y_arr, p_arr),
        "mc_brier_base": multiclass_brier(y_arr, base),
    }
    report["mc_log_loss_skill"] = skill(report["mc_log_loss"], report["mc_log_loss_base"])
    report["mc_brier_skill"] = skill(report["mc_brier"], report["mc_brier_base"])
    return report


def reliability_png(tables: Mapping[str, pl.DataFrame], path: Path | str, title: str = "Reliability") -> Path:
    """Reliability diagram (one line per named table, marker area ∝ bin count) written as PNG."""
    # A bare Figure renders through the Agg canvas: no pyplot global state, never a display.
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5.0, 5.0), dpi=100)
    ax = fig.subplots()
    ax.plot([0.0, 1.0], [0.0, 1.0], color="grey", linestyle="--", linewidth=1, label="perfect")
    for name, table in tables.items():
        if table.height == 0:
            continue
        counts = table["count"].to_numpy()
        sizes = 20.0 + 180.0 * counts / counts.max()
        line, = ax.plot(table["p_mean"].to_numpy(), table["y_rate"].to_numpy(), linewidth=1.5,
                        label=f"{name} (n={int(counts.sum())})")
        ax.scatter(table["p_mean"].to_numpy(), table["y_rate"].to_numpy(), s=sizes, color=line.get_color(), alpha=0.6)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability", ylabel="observed rate", title=title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
