"""The single-feature baseline: the yardstick a model (or retrieval) must beat beyond the base rate.

As of session D, on the training window (sessions strictly before D):
1. every feature dimension is scored by its AUC for BREAK vs everything else (REJECT and CHOP);
   a feature that ranks the wrong way round counts by 1 − AUC with its sign flipped, so the
   choice is "the most informative single number", whichever way it points;
2. the best one is calibrated with a 1-d logistic regression on the window (standardized,
   sign-adjusted value → p(BREAK)), two parameters, so it cannot overfit a few hundred episodes;
3. applied to D's episodes unchanged.

The target is unconditional BREAK vs rest, the same event as retrieval's `p_break`, so the
retrieval report can put this baseline's column beside its own numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np


def column_aucs(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ROC AUC of every column of X as a score for y (Mann–Whitney with mid-ranks for ties).

    A constant column scores 0.5; with a single class present every column is NaN.
    """
    matrix = np.asarray(X, dtype=np.float64)
    target = np.asarray(y, dtype=bool)
    positives, negatives = int(target.sum()), int((~target).sum())
    if positives == 0 or negatives == 0:
        return np.full(matrix.shape[1], np.nan)
    from scipy.stats import rankdata  # here: scipy.stats costs ~0.4 CPU-s to import, and only fitting ranks

    ranks = rankdata(matrix, axis=0)  # average ranks: ties count half
    rank_sum = ranks[target].sum(axis=0)
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


@dataclass(frozen=True)
class SingleFeatureBaseline:
    """p(BREAK) = σ(slope · sign · (x − centre) / scale + intercept) of one named feature."""

    feature: str
    sign: int  # +1: higher values mean BREAK; −1: lower values do
    window_auc: float  # sign-adjusted (≥ 0.5) on the window it was chosen on
    centre: float
    scale: float
    slope: float
    intercept: float
    n_window: int

    def predict(self, values) -> np.ndarray:
        z = self.sign * (np.asarray(values, dtype=np.float64) - self.centre) / self.scale
        return 1.0 / (1.0 + np.exp(-(self.slope * z + self.intercept)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> SingleFeatureBaseline:
        return cls(**dict(data))


def fit_single_feature_baseline(X: np.ndarray, is_break: np.ndarray, names: Sequence[str],
                                min_samples: int = 30) -> SingleFeatureBaseline | None:
    """The best single feature of the window, calibrated on it; None when the window cannot support one
    (fewer than `min_samples` episodes or only one outcome)."""
    matrix = np.asarray(X, dtype=np.float64)
    y = np.asarray(is_break, dtype=bool)
    if matrix.shape != (y.size, len(names)):
        raise ValueError(f"X is {matrix.shape}; expected ({y.size}, {len(names)})")
    if y.size < min_samples or y.all() or not y.any():
        return None
    aucs = column_aucs(matrix, y)
    strength = np.abs(aucs - 0.5)
    best = int(np.argmax(strength))  # first of equals: the registry order breaks ties
    sign = 1 if aucs[best] >= 0.5 else -1
    column = matrix[:, best]
    centre = float(np.median(column))
    scale = float(np.std(column)) or 1.0
    from sklearn.linear_model import LogisticRegression

    z = sign * (column - centre) / scale
    logistic = LogisticRegression(C=1e3).fit(z[:, None], y)
    return SingleFeatureBaseline(feature=str(names[best]), sign=sign, window_auc=float(0.5 + strength[best]),
                                 centre=centre, scale=scale, slope=float(logistic.coef_[0, 0]),
                                 intercept=float(logistic.intercept_[0]), n_window=int(y.size))
