"""Research analyses over labelled episodes (SPEC §9): segment base rates, time stratification,
level specificity and feature interactions, each with its uncertainty.

Inputs are episodes (one row per anchor — never 30 s rows) and, where a model is involved,
its walk-forward predictions (the union of ml/break_predictions: each session scored by the
model as of that session): nothing here is scored on data a model was fitted on.

Like with like: a prediction is scored against the event it predicts. p(BREAK | decisive)
(`p_break_decisive`) is scored on decisive episodes only, BREAK = 1 vs REJECT = 0, against
the window's decisive base rate; an unconditional p(BREAK) (`p_break`, or the single-feature
baseline) is scored on every episode, BREAK = 1 vs REJECT or CHOP = 0, against the window's
unconditional base rate. Scoring a conditional probability with CHOP counted as a miss
punishes the model for a question it was never asked.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import polars as pl

from .metrics import binary_report, multiclass_report, reliability_table

# scipy.stats (~0.4 CPU-s to import) is imported inside the report functions that test with it: this
# module is loaded by every process of the code location, its functions only by the weekly reports.
Z90 = 1.6448536269514722  # scipy.stats.norm.ppf(0.95), as dbt_project.yml's wilson_z_90


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
    from scipy.stats import binomtest

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
            "p_value_vs_pooled": float(binomtest(breaks, n, pooled).pvalue) if 0 < pooled < 1 else float("nan"),
        })
    return sorted(rows, key=lambda r: [str(r[c]) for c in by])


# The two questions a prediction can answer, and what each is scored on.
CONDITIONAL = {"p": "p_break_decisive", "base": "base_break_decisive", "scope": "decisive episodes, BREAK vs REJECT"}
UNCONDITIONAL = {"p": "p_break", "base": "base_break", "scope": "all episodes, BREAK vs REJECT or CHOP"}
BASELINE = {"p": "p_break_baseline", "base": "base_break", "scope": "all episodes, BREAK vs REJECT or CHOP"}


def _in_scope(predictions: pl.DataFrame, question: dict) -> pl.DataFrame:
    labelled = predictions.filter(pl.col("label").is_not_null() & pl.col(question["p"]).is_not_null())
    return labelled.filter(pl.col("label") != "CHOP") if question is CONDITIONAL else labelled


def score(predictions: pl.DataFrame, question: dict = CONDITIONAL) -> dict[str, float]:
    """Binary metrics of one prediction column on the episodes its question covers (see module docstring)."""
    rows = _in_scope(predictions, question)
    y = (rows["label"] == "BREAK").to_numpy().astype(float)
    return binary_report(y, rows[question["p"]].to_numpy(), rows[question["base"]].to_numpy())


def scored_by_segment(predictions: pl.DataFrame, by: str, question: dict = CONDITIONAL, min_n: int = 20) -> dict[str, dict]:
    """Walk-forward metrics of one prediction column vs its base rate within each segment, like with like."""
    out = {}
    rows = _in_scope(predictions, question)
    for (key,), group in rows.group_by(by, maintain_order=True):
        if group.height < min_n:
            out[str(key)] = {"n": group.height, "note": f"fewer than {min_n} held-out episodes"}
            continue
        report = score(group, question)
        out[str(key)] = {k: report[k] for k in ("n", "event_rate", "auc", "brier", "brier_base", "brier_skill", "ece")}
    return out


def model_evaluation(predictions: pl.DataFrame, min_group: int = 20) -> dict:
    """The walk-forward evaluation of the as-of break model: the binary model on its own question,
    the unconditional p(BREAK) and the single-feature baseline on theirs, the multiclass model
    against the window base rates, reliability tables, and all of it by level kind and direction."""
    labelled = predictions.filter(pl.col("label").is_not_null())
    if labelled.height == 0:
        return {"n": 0, "note": "no labelled walk-forward predictions yet"}
    questions = {"p_break_decisive": CONDITIONAL, "p_break": UNCONDITIONAL, "p_break_baseline": BASELINE}
    y_idx = labelled["label"].replace_strict({"BREAK": 0, "REJECT": 1, "CHOP": 2}, return_dtype=pl.Int64).to_numpy()
    probs = labelled.select("p_break", "p_reject", "p_chop").to_numpy()
    base = labelled.select("base_break", (1.0 - pl.col("base_break") - pl.col("base_chop")), "base_chop").to_numpy()
    report = {
        "n": labelled.height,
        "sessions": labelled["session"].n_unique(),
        "first_session": str(labelled["session"].min()),
        "last_session": str(labelled["session"].max()),
        "definitions": {name: q["scope"] for name, q in questions.items()},
        "pooled": {name: score(labelled, q) for name, q in questions.items()},
        "multiclass": multiclass_report(y_idx, probs, base) | {
            "mean_predicted_shares": dict(zip(("BREAK", "REJECT", "CHOP"), map(float, probs.mean(axis=0)))),
            "observed_shares": dict(zip(("BREAK", "REJECT", "CHOP"), map(float, np.bincount(y_idx, minlength=3) / y_idx.size))),
            "mean_base_shares": dict(zip(("BREAK", "REJECT", "CHOP"), map(float, base.mean(axis=0))))},
        "baseline_features": dict(labelled["baseline_feature"].drop_nulls().value_counts().iter_rows()),
        "reliability": {},
    }
    for name, q in questions.items():
        rows = _in_scope(labelled, q)
        y = (rows["label"] == "BREAK").to_numpy().astype(float)
        report["reliability"][name] = reliability_table(y, rows[q["p"]].to_numpy()).to_dicts()
        report["reliability"][f"{name} base rate"] = reliability_table(y, rows[q["base"]].to_numpy()).to_dicts()
    for segment in ("level_kind", "direction"):
        report[f"by_{segment}"] = {name: scored_by_segment(labelled, segment, q, min_group) for name, q in questions.items()}
    return report


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
    from scipy.stats import chi2

    return {"lr_stat": lr, "p_value": float(chi2.sf(lr, 1)), "lift": (full - main) / len(y)}


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
