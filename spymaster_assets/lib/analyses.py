"""Research analyses over labelled episodes (SPEC §9): segment base rates, time stratification,
level specificity and feature interactions, each with its uncertainty.

Inputs are episodes (one row per anchor — never 30 s rows) and, where a model is involved,
its out-of-fold predictions: nothing here is scored on data a model was fitted on.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import polars as pl
from scipy import stats

from .metrics import binary_report

Z90 = float(stats.norm.ppf(0.95))


def wilson_interval(successes: int, n: int, z: float = Z90) -> tuple[float, float]:
    """Wilson score interval for a binomial share (90% by default)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def segment_base_rates(episodes: pl.DataFrame, by: tuple[str, ...]) -> list[dict]:
    """Outcome shares per segment with a Wilson 90% interval for the BREAK share and a two-sided
    binomial test of that share against the pooled BREAK share."""
    pooled = float((episodes["label"] == "BREAK").mean())
    rows = []
    for key, group in episodes.group_by(list(by), maintain_order=True):
        n = group.height
        breaks = int((group["label"] == "BREAK").sum())
        low, high = wilson_interval(breaks, n)
        rows.append({
            **dict(zip(by, key)),
            "n": n,
            "break_share": breaks / n,
            "reject_share": float((group["label"] == "REJECT").mean()),
            "chop_share": float((group["label"] == "CHOP").mean()),
            "break_share_90ci": [low, high],
            "p_value_vs_pooled": float(stats.binomtest(breaks, n, pooled).pvalue) if 0 < pooled < 1 else float("nan"),
        })
    return sorted(rows, key=lambda r: [str(r[c]) for c in by])


def scored_by_segment(oof: pl.DataFrame, by: str, min_n: int = 20) -> dict[str, dict]:
    """Out-of-fold metrics of p(BREAK) vs the fold base rate within each segment (`oof` needs
    `label`, `p_break`, `base_break` and the segment column)."""
    out = {}
    for (key,), group in oof.group_by(by, maintain_order=True):
        if group.height < min_n:
            out[str(key)] = {"n": group.height, "note": f"fewer than {min_n} held-out episodes"}
            continue
        y = (group["label"] == "BREAK").to_numpy().astype(float)
        report = binary_report(y, group["p_break"].to_numpy(), group["base_break"].to_numpy())
        out[str(key)] = {k: report[k] for k in ("n", "event_rate", "auc", "brier", "brier_base", "brier_skill", "ece")}
    return out


def _log_likelihood(X: np.ndarray, y: np.ndarray) -> float:
    """Maximized Bernoulli log-likelihood of an (almost) unpenalized logistic regression."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e6, max_iter=2000)
    model.fit(X, y)
    p = np.clip(model.predict_proba(X)[:, 1], 1e-12, 1 - 1e-12)
    return float(np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)))


def interaction_test(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> dict:
    """Does a × b add to a + b in a logistic model of y? Likelihood-ratio test (1 df) on
    standardized inputs; `lift` is the log-likelihood gained per episode."""
    def z(v):
        sd = v.std()
        return (v - v.mean()) / sd if sd > 0 else v * 0.0

    za, zb = z(a), z(b)
    if not (za.any() and zb.any()) or y.min() == y.max():
        return {"lr_stat": float("nan"), "p_value": float("nan"), "lift": float("nan")}
    main = _log_likelihood(np.column_stack([za, zb]), y)
    full = _log_likelihood(np.column_stack([za, zb, za * zb]), y)
    lr = max(0.0, 2.0 * (full - main))
    return {"lr_stat": lr, "p_value": float(stats.chi2.sf(lr, 1)), "lift": (full - main) / len(y)}


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """BH-adjusted p-values (false discovery rate)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    ranked = p[order] * len(p) / np.arange(1, len(p) + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(adjusted)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def feature_interactions(X: np.ndarray, y: np.ndarray, names: list[str], hypotheses: dict[str, tuple[str, str]],
                         candidates: list[str], alpha: float = 0.10) -> dict:
    """Hypothesised pairs tested one by one, then every pair among `candidates` (e.g. the most
    important features) with Benjamini–Hochberg control of the false discovery rate."""
    column = {n: i for i, n in enumerate(names)}
    hypothesised = {}
    for label, (a, b) in hypotheses.items():
        if a in column and b in column:
            hypothesised[label] = {"pair": [a, b], **interaction_test(X[:, column[a]], X[:, column[b]], y)}
    pairs = [(a, b) for a, b in combinations([c for c in candidates if c in column], 2)]
    tests = [interaction_test(X[:, column[a]], X[:, column[b]], y) for a, b in pairs]
    p_values = np.array([t["p_value"] for t in tests], dtype=float)
    finite = np.isfinite(p_values)
    adjusted = np.full_like(p_values, np.nan)
    if finite.any():
        adjusted[finite] = benjamini_hochberg(p_values[finite])
    discovered = sorted(
        ({"pair": [a, b], **t, "q_value": float(q)} for (a, b), t, q in zip(pairs, tests, adjusted) if np.isfinite(q)),
        key=lambda r: r["q_value"],
    )
    return {"hypothesised": hypothesised, "pairwise": discovered[:20], "pairs_tested": len(pairs),
            "significant_at_fdr": [r["pair"] for r in discovered if r["q_value"] <= alpha]}
