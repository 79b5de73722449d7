"""The break model (SPEC §9): LightGBM on episode vectors, validated honestly, calibrated, explained.

Served "as of D" (`fit_window_model`, `AsOfConfig`): the model answering for session D is
fitted on a bounded trailing window of sessions strictly before D and calibrated on an inner
walk-forward over that window's tail; its scores on D are the walk-forward evaluation.
`train_break_model` (expanding walk-forward + leave-one-day-out over everything given) remains
for research reports and benchmarks.

Two models share one feature matrix:
- **binary** BREAK vs REJECT, trained on decisive episodes only (CHOP excluded). Its
  calibrated probability is the headline `p_break`; it is *conditional on the level
  deciding* (p_reject = 1 − p_break). Attribution (TreeSHAP) runs on this model.
- **multiclass** BREAK / REJECT / CHOP on every episode, for `p_chop` and the full
  outcome distribution. Its probabilities are reported as trained (not recalibrated).

Validation (see `validation.py` for the purge/embargo definitions): walk-forward by
session with an expanding window (the forecast-honest estimate, and the source of the
calibration data) and leave-one-day-out (more training data per fold, reported
separately). Every fold's base-rate predictor is the *training fold's* class shares, so
"beats the base rate" means beating what was knowable at training time.

Calibration: fitted on the walk-forward out-of-fold raw scores (log-odds) of decisive
episodes. Isotonic regression when there are at least `isotonic_min_samples` (1000) of them —
below that, isotonic's step function overfits and Platt scaling (a 2-parameter logistic
on the raw score) is the safer choice. Calibrated probabilities are clipped to
[calibration_clip, 1 − calibration_clip] because a few hundred samples cannot support a
0 or 1. The pooled "wf_cal" metrics are prequential: fold k is scored with a calibrator
fitted only on folds before k (identity while fewer than `calibration_min_samples`
exist), so even the calibrated numbers never use data the calibrator saw.

Edge vs base rate (attribution): a driver's `edge` is the probability shift its TreeSHAP
contribution φ (log-odds) would produce on its own, starting from the base rate b:
`edge = σ(logit(b) + φ) − b`. Log-odds contributions add up, probability points do not,
so driver edges do not sum to the total edge; the total (`calibrated p_break − b`) is
reported separately in `prediction.edge`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np
import polars as pl

# LightGBM (~0.6 CPU-s to import, with sklearn and narwhals) is imported where a model is fitted or
# loaded: a process that does neither (a daily run without a model to score, the CLI) does not pay for it.
if TYPE_CHECKING:
    import lightgbm as lgb

from . import metrics
from .validation import Split, as_session_days, leave_one_day_out_splits, session_span_ns, walk_forward_splits

CLASSES = ("BREAK", "REJECT", "CHOP")
BREAK_IDX, REJECT_IDX, CHOP_IDX = 0, 1, 2
WALK_FORWARD, LEAVE_ONE_DAY_OUT = "walk_forward", "leave_one_day_out"
METRIC_PREFIX = {WALK_FORWARD: "wf", LEAVE_ONE_DAY_OUT: "lodo"}
SCHEMA_VERSION = "1"


@dataclass(frozen=True)
class BreakModelConfig:
    """Hyper-parameters sized for small data (hundreds to a few thousand episodes), fixed a priori
    rather than searched (a search on the evaluation sessions would be a leak, and an inner one
    per window is noisy at this size):

    - num_leaves 4 with min_data_in_leaf 50: a window of a few hundred to ~1,500 decisive
      episodes cannot estimate more than low-order interactions — each leaf keeps ≥ 50
      episodes (a ±0.07 standard error on its BREAK share), and 4 leaves are depth-2 trees;
    - learning_rate 0.02 × 400 rounds: the same total step budget as 0.05 × 200 (≈ 8–10),
      spread over more, smaller steps (less variance per tree);
    - feature_fraction 0.5: ~150 correlated dimensions (micro-history and trajectory repeat
      the key series) — sampling half per tree keeps one family from monopolising the fit.
    """

    n_estimators: int = 400
    learning_rate: float = 0.02
    num_leaves: int = 4
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.5
    lambda_l2: float = 1.0
    max_bin: int = 63  # few episodes per feature: coarse histograms generalise better and train faster
    num_threads: int = 1  # 1 = bit-for-bit reproducible and no OpenMP spin on a 2-core box
    seed: int = 20240601
    min_train_sessions: int = 10
    embargo_sessions: int = 1
    leave_one_day_out: bool = True
    # Isotonic's step function needs on the order of a thousand calibration samples to beat a
    # 2-parameter sigmoid (Niculescu-Mizil & Caruana 2005); an as-of window's held-out tail
    # holds a few hundred, so Platt scaling is the default below that.
    isotonic_min_samples: int = 1000
    calibration_min_samples: int = 30
    calibration_clip: float = 0.01
    precision_threshold: float = 0.6
    reliability_bins: int = 10

    def lgb_params(self, objective: str) -> dict:
        params = {
            "objective": objective,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "lambda_l2": self.lambda_l2,
            "max_bin": self.max_bin,
            "num_threads": self.num_threads,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,  # the col-wise/row-wise auto choice is timing-based: not reproducible
            "verbosity": -1,
        }
        if objective == "multiclass":
            params["num_class"] = len(CLASSES)
        return params

    def as_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1.0 - 1e-12)
    return float(np.log(p / (1.0 - p)))


@dataclass(frozen=True)
class Calibrator:
    """Monotone map from the binary model's raw score (log-odds) to a calibrated p(BREAK).

    Stored as plain numbers (isotonic knots or Platt coefficients) and evaluated with numpy,
    so it round-trips through JSON exactly and costs microseconds per prediction.
    """

    method: str  # "isotonic" | "platt" | "identity"
    knots_x: tuple[float, ...] = ()
    knots_y: tuple[float, ...] = ()
    slope: float = 1.0
    intercept: float = 0.0
    clip: float = 0.0
    n_samples: int = 0

    def __call__(self, raw_score) -> np.ndarray:
        raw = np.asarray(raw_score, dtype=np.float64)
        if self.method == "isotonic":
            # sklearn's IsotonicRegression(out_of_bounds="clip").predict is this linear interpolation.
            p = np.interp(raw, np.asarray(self.knots_x), np.asarray(self.knots_y))
        else:
            p = _sigmoid(self.slope * raw + self.intercept)
        return np.clip(p, self.clip, 1.0 - self.clip)

    @classmethod
    def identity(cls) -> Calibrator:
        return cls("identity")

    @classmethod
    def fit(cls, raw_score: np.ndarray, y: np.ndarray, isotonic_min_samples: int = 200, clip: float = 0.01,
            min_samples: int = 30) -> Calibrator:
        raw = np.asarray(raw_score, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if raw.size < min_samples or np.unique(y).size < 2:
            return cls.identity()
        if raw.size >= isotonic_min_samples:
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)
            return cls("isotonic", tuple(map(float, iso.X_thresholds_)), tuple(map(float, iso.y_thresholds_)),
                       clip=clip, n_samples=int(raw.size))
        from sklearn.linear_model import LogisticRegression

        # Weak L2 (C = 1000) only so perfectly separated folds still give finite coefficients.
        platt = LogisticRegression(C=1e3).fit(raw[:, None], y)
        return cls("platt", slope=float(platt.coef_[0, 0]), intercept=float(platt.intercept_[0]), clip=clip,
                   n_samples=int(raw.size))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Calibrator:
        return cls(**{**data, "knots_x": tuple(data.get("knots_x", ())), "knots_y": tuple(data.get("knots_y", ()))})


@dataclass(frozen=True)
class ClassCalibrator:
    """Multiclass recalibration: a multinomial logistic regression on the booster's log-probabilities
    ("matrix scaling"), fitted on held-out predictions. It fixes what a booster trained on a
    few hundred episodes gets wrong about the class mix (e.g. a rare CHOP predicted at 96 %):
    with an intercept per class, its mean predicted shares on the data it was fitted on equal
    that data's class shares. Identity when the held-out set is too small or lacks a class.
    """

    method: str  # "matrix_scaling" | "identity"
    coef: tuple[tuple[float, ...], ...] = ()
    intercept: tuple[float, ...] = ()
    n_samples: int = 0

    def __call__(self, probs) -> np.ndarray:
        p = np.asarray(probs, dtype=np.float64)
        if self.method == "identity":
            return p
        logits = np.log(np.clip(p, 1e-12, 1.0)) @ np.asarray(self.coef).T + np.asarray(self.intercept)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    @classmethod
    def identity(cls) -> ClassCalibrator:
        return cls("identity")

    @classmethod
    def fit(cls, probs: np.ndarray, y_class: np.ndarray, min_samples: int = 30) -> ClassCalibrator:
        p = np.asarray(probs, dtype=np.float64)
        y = np.asarray(y_class, dtype=np.int64)
        if y.size < min_samples or np.unique(y).size < len(CLASSES):
            return cls.identity()
        from sklearn.linear_model import LogisticRegression

        # Moderate L2 (C = 1): nine coefficients from a few hundred held-out episodes.
        model = LogisticRegression(C=1.0, max_iter=1000).fit(np.log(np.clip(p, 1e-12, 1.0)), y)
        order = np.argsort(model.classes_)  # rows in CLASSES order
        return cls("matrix_scaling", tuple(tuple(map(float, row)) for row in model.coef_[order]),
                   tuple(map(float, model.intercept_[order])), int(y.size))

    def to_dict(self) -> dict:
        return {"method": self.method, "coef": [list(r) for r in self.coef], "intercept": list(self.intercept),
                "n_samples": self.n_samples}

    @classmethod
    def from_dict(cls, data: Mapping) -> ClassCalibrator:
        return cls(data["method"], tuple(tuple(r) for r in data.get("coef", ())), tuple(data.get("intercept", ())),
                   int(data.get("n_samples", 0)))


def class_indices(y_labels) -> np.ndarray:
    """"BREAK"/"REJECT"/"CHOP" → 0/1/2; anything else (including nulls) is an error, not a guess."""
    labels = np.asarray(y_labels.to_list() if hasattr(y_labels, "to_list") else y_labels, dtype=object)
    codes = np.full(labels.size, -1, dtype=np.int64)
    for index, name in enumerate(CLASSES):
        codes[labels == name] = index
    if (codes < 0).any():
        unknown = sorted({str(v) for v in labels[codes < 0]})
        raise ValueError(f"labels must be one of {CLASSES}; got {unknown[:5]}")
    return codes


def _training_inputs(X, y_labels, feature_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The feature matrix (float64, C order), class indices and names, checked to agree and be complete."""
    matrix = np.ascontiguousarray(X, dtype=np.float64)
    y_class = class_indices(y_labels)
    names = tuple(feature_names)
    if matrix.ndim != 2 or matrix.shape != (y_class.size, len(names)):
        raise ValueError(f"X is {matrix.shape}; expected ({y_class.size}, {len(names)})")
    if not np.isfinite(matrix).all():
        raise ValueError("X contains NaN or inf: episode vectors must be complete (SPEC §7)")
    return matrix, y_class, names


def _fit_final_models(matrix: np.ndarray, y_class: np.ndarray, decisive: np.ndarray, config: "BreakModelConfig",
                      names: Sequence[str]) -> tuple[lgb.Booster, lgb.Booster, pl.DataFrame]:
    """The served pair — binary BREAK vs REJECT on decisive episodes, multiclass on all — and their gain/split importance."""
    binary = _train_booster(matrix[decisive], (y_class[decisive] == BREAK_IDX).astype(np.float64), config, "binary",
                            names)
    multiclass = _train_booster(matrix, y_class.astype(np.float64), config, "multiclass", names)
    importance = pl.DataFrame({
        "feature": list(names),
        "gain": binary.feature_importance("gain"),
        "split": binary.feature_importance("split").astype(np.int64),
        "gain_multiclass": multiclass.feature_importance("gain"),
    }).sort("gain", descending=True, maintain_order=True)
    return binary, multiclass, importance


def _train_booster(X: np.ndarray, y: np.ndarray, config: BreakModelConfig, objective: str,
                   feature_names: Sequence[str] | None = None) -> lgb.Booster:
    import lightgbm as lgb

    data = lgb.Dataset(X, label=y, feature_name=list(feature_names) if feature_names else "auto",
                       params={"max_bin": config.max_bin, "verbosity": -1}, free_raw_data=True)
    return lgb.train(config.lgb_params(objective), data, num_boost_round=config.n_estimators)


@dataclass
class ValidationResult:
    """Out-of-fold predictions of one scheme, with per-fold and pooled metrics."""

    scheme: str
    folds: list[dict]
    pooled: dict[str, float]
    reliability: pl.DataFrame
    oof_idx: np.ndarray  # episode row of each out-of-fold prediction
    oof_fold: np.ndarray
    oof_raw: np.ndarray  # binary raw score (log-odds), uncalibrated
    oof_base_rate: np.ndarray  # the training fold's BREAK share among decisive episodes
    oof_probs: np.ndarray  # multiclass (n × 3)
    oof_base_probs: np.ndarray  # the training fold's class shares (n × 3)
    pooled_calibrated: dict[str, float] | None = None
    reliability_calibrated: pl.DataFrame | None = None


def _score_fold(y_class: np.ndarray, raw: np.ndarray, base_rate: float, probs: np.ndarray, base_probs: np.ndarray,
                config: BreakModelConfig) -> dict[str, float]:
    decisive = y_class != CHOP_IDX
    report = metrics.binary_report(y_class[decisive] == BREAK_IDX, _sigmoid(raw[decisive]), base_rate,
                                   config.reliability_bins, config.precision_threshold)
    return report | metrics.multiclass_report(y_class, probs, base_probs)


def _cross_validate(scheme: str, splits: Iterable[Split], X: np.ndarray, y_class: np.ndarray,
                    config: BreakModelConfig) -> ValidationResult:
    decisive = y_class != CHOP_IDX
    folds, idx, fold_of, raw_all, base_all, probs_all, base_probs_all = [], [], [], [], [], [], []
    for split in splits:
        train, test = split.train_idx, split.test_idx
        train_decisive = train[decisive[train]]
        if train_decisive.size == 0 or test.size == 0:
            continue
        binary = _train_booster(X[train_decisive], (y_class[train_decisive] == BREAK_IDX).astype(np.float64),
                                config, "binary")
        multiclass = _train_booster(X[train], y_class[train].astype(np.float64), config, "multiclass")
        raw = binary.predict(X[test], raw_score=True, num_threads=config.num_threads)
        probs = multiclass.predict(X[test], num_threads=config.num_threads)
        base_rate = float(np.mean(y_class[train_decisive] == BREAK_IDX))
        base_probs = np.bincount(y_class[train], minlength=len(CLASSES)) / train.size
        fold = len(folds)
        folds.append({
            "fold": fold,
            "test_session": split.test_session.isoformat(),
            "n_train": int(train.size),
            "n_test": int(test.size),
            "n_purged": split.n_purged,
            "embargoed_sessions": [s.isoformat() for s in split.embargoed_sessions],
            "base_rate": base_rate,
        } | _score_fold(y_class[test], raw, base_rate, probs, base_probs, config))
        idx.append(test)
        fold_of.append(np.full(test.size, fold))
        raw_all.append(raw)
        base_all.append(np.full(test.size, base_rate))
        probs_all.append(probs)
        base_probs_all.append(np.broadcast_to(base_probs, probs.shape))
    if not folds:
        empty, no_rows = np.empty(0), np.empty(0, dtype=np.int64)
        return ValidationResult(scheme, [], {"n_folds": 0.0}, metrics.reliability_table(empty, empty), no_rows,
                                no_rows, empty, empty, np.empty((0, 3)), np.empty((0, 3)))
    oof_idx, oof_raw, oof_base = np.concatenate(idx), np.concatenate(raw_all), np.concatenate(base_all)
    oof_probs, oof_base_probs = np.vstack(probs_all), np.vstack(base_probs_all)
    y_oof = y_class[oof_idx]
    pooled = {"n_folds": float(len(folds))} | _pooled_report(y_oof, _sigmoid(oof_raw), oof_base, oof_probs,
                                                               oof_base_probs, config)
    decisive_oof = y_oof != CHOP_IDX
    reliability = metrics.reliability_table(y_oof[decisive_oof] == BREAK_IDX, _sigmoid(oof_raw[decisive_oof]),
                                            config.reliability_bins)
    return ValidationResult(scheme, folds, pooled, reliability, oof_idx, np.concatenate(fold_of), oof_raw, oof_base,
                            oof_probs, oof_base_probs)


def _pooled_report(y_class, p_break, base_rate, probs, base_probs, config: BreakModelConfig) -> dict[str, float]:
    decisive = y_class != CHOP_IDX
    return metrics.binary_report(y_class[decisive] == BREAK_IDX, p_break[decisive], base_rate[decisive],
                                 config.reliability_bins, config.precision_threshold) | \
        metrics.multiclass_report(y_class, probs, base_probs)


def _prequential_calibration(result: ValidationResult, y_class: np.ndarray, config: BreakModelConfig) -> None:
    """Score walk-forward fold k with a calibrator fitted on folds < k only (honest calibrated metrics)."""
    if not result.folds:
        return
    y_oof = y_class[result.oof_idx]
    decisive = y_oof != CHOP_IDX
    calibrated = np.empty_like(result.oof_raw)
    for fold in range(len(result.folds)):
        earlier = (result.oof_fold < fold) & decisive
        calibrator = Calibrator.fit(result.oof_raw[earlier], y_oof[earlier] == BREAK_IDX, config.isotonic_min_samples,
                                    config.calibration_clip, config.calibration_min_samples)
        current = result.oof_fold == fold
        calibrated[current] = calibrator(result.oof_raw[current])
    result.pooled_calibrated = {"n_folds": float(len(result.folds))} | metrics.binary_report(
        y_oof[decisive] == BREAK_IDX, calibrated[decisive], result.oof_base_rate[decisive], config.reliability_bins,
        config.precision_threshold)
    result.reliability_calibrated = metrics.reliability_table(y_oof[decisive] == BREAK_IDX, calibrated[decisive],
                                                              config.reliability_bins)


@dataclass
class BreakPredictor:
    """What serving needs: both boosters, the calibrator, the layout and the base rates."""

    binary_booster: lgb.Booster
    multiclass_booster: lgb.Booster
    calibrator: Calibrator
    feature_names: tuple[str, ...]
    base_rate: float  # BREAK share among decisive training episodes
    class_shares: tuple[float, float, float]  # BREAK, REJECT, CHOP shares among all training episodes
    num_threads: int = 1
    class_calibrator: ClassCalibrator = field(default_factory=ClassCalibrator.identity)

    def _matrix(self, X) -> np.ndarray:
        matrix = np.asarray(X, dtype=np.float64)
        matrix = matrix.reshape(1, -1) if matrix.ndim == 1 else matrix
        if matrix.shape[1] != len(self.feature_names):
            raise ValueError(f"expected {len(self.feature_names)} features, got {matrix.shape[1]}")
        return matrix

    def predict(self, X) -> dict[str, np.ndarray]:
        """Calibrated p(BREAK | decisive), its raw score, and the multiclass distribution (n × 3, CLASSES order)."""
        matrix = self._matrix(X)
        raw = self.binary_booster.predict(matrix, raw_score=True, num_threads=self.num_threads)
        probs = self.class_calibrator(self.multiclass_booster.predict(matrix, num_threads=self.num_threads))
        return {
            "p_break": self.calibrator(raw),
            "p_break_raw": _sigmoid(raw),
            "raw_score": raw,
            "p_multiclass": probs,
            "p_chop": probs[:, CHOP_IDX],
        }

    def contributions(self, X) -> np.ndarray:
        """TreeSHAP of the binary model: (n × (features + 1)) log-odds, last column the bias.

        Each row sums to the raw score (log-odds) of that episode.
        """
        return self.binary_booster.predict(self._matrix(X), pred_contrib=True, num_threads=self.num_threads)

    def explain(self, x_row, feature_names: Sequence[str], sections: Mapping[str, str], driver_names: Mapping[str, str],
                history_X: np.ndarray | None = None, top_k: int = 3, max_combos: int = 3,
                context: Mapping | None = None) -> dict:
        """One episode → a `level_signal`-shaped explanation: prediction, drivers, combos, sections, context.

        Features that share a driver name (e.g. the five micro-history lags of one series)
        are one driver: their contributions add (log-odds are additive). A driver's
        percentile is that of its dominant feature (largest |φ|) against `history_X`
        (mid-rank, 0–100; None without history). `strength` is the driver's share of the
        total |φ| (0–100). Unmapped features keep their own name and the section "other".

        Combos are *not* interaction effects (LightGBM has no SHAP interaction values):
        they are pairs among the reported drivers that push the same way, ranked by the
        product of their contributions, with the joint edge σ(logit(b) + φ₁ + φ₂) − b.
        """
        if tuple(feature_names) != self.feature_names:
            raise ValueError("feature_names differ from the layout the model was trained on")
        x = self._matrix(x_row)
        contrib = self.contributions(x)[0]
        phi, bias = contrib[:-1], float(contrib[-1])
        raw = float(contrib.sum())
        p_break = float(self.calibrator(raw))
        probs = self.class_calibrator(self.multiclass_booster.predict(x, num_threads=self.num_threads))[0]
        base = self.base_rate
        base_logit = _logit(base)

        def edge(log_odds):
            return _sigmoid(base_logit + np.asarray(log_odds)) - base

        section_names, section_code = np.unique([sections.get(f, "other") for f in self.feature_names],
                                                return_inverse=True)
        section_phi = np.bincount(section_code, weights=phi, minlength=section_names.size)
        section_edge = edge(section_phi)

        labels = [driver_names.get(f, f) for f in self.feature_names]
        driver_labels, driver_code = np.unique(labels, return_inverse=True)
        driver_phi = np.bincount(driver_code, weights=phi, minlength=driver_labels.size)
        # Dominant feature per driver: the member with the largest |φ| (lexsort: last key is primary).
        order = np.lexsort((-np.abs(phi), driver_code))
        first_of_group = np.r_[True, driver_code[order][1:] != driver_code[order][:-1]]
        dominant = np.empty(driver_labels.size, dtype=np.int64)
        dominant[driver_code[order][first_of_group]] = order[first_of_group]
        total_abs = float(np.abs(phi).sum()) or 1.0
        history = None if history_X is None else np.asarray(history_X, dtype=np.float64)
        if history is not None and (history.ndim != 2 or history.shape[1] != len(self.feature_names)):
            raise ValueError(f"history_X must be (n × {len(self.feature_names)}), got {history.shape}")

        def driver(g: int) -> dict:
            j = int(dominant[g])
            value = float(x[0, j])
            percentile = None
            if history is not None and history.shape[0]:
                column = history[:, j]
                percentile = float(100.0 * (np.count_nonzero(column < value) + 0.5 * np.count_nonzero(column == value))
                                   / column.size)
            members = [self.feature_names[i] for i in np.flatnonzero(driver_code == g)]
            log_odds = float(driver_phi[g])
            entry = {
                "name": str(driver_labels[g]),
                "direction": "BREAK" if log_odds > 0 else "REJECT",
                "sign": 1 if log_odds > 0 else -1,
                "log_odds": log_odds,
                "edge": float(edge(log_odds)),
                "strength": round(100.0 * abs(log_odds) / total_abs, 1),
                "percentile": percentile,
                "value": value,
                "feature": self.feature_names[j],
                "features": members,
                "section": sections.get(self.feature_names[j], "other"),
            }
            where = f"{_ordinal(round(percentile))} percentile" if percentile is not None else f"value {value:.3g}"
            entry["description"] = f"{entry['name']} ({where}): {entry['edge']:+.1%} vs base rate"
            return entry

        ranked = np.argsort(-driver_phi, kind="stable")
        break_groups = [int(g) for g in ranked if driver_phi[g] > 0][:top_k]
        reject_groups = [int(g) for g in ranked[::-1] if driver_phi[g] < 0][:top_k]
        drivers = {"break": [driver(g) for g in break_groups], "reject": [driver(g) for g in reject_groups]}

        pairs = [(a, b) for side in (break_groups, reject_groups) for a, b in itertools.combinations(side, 2)]
        pairs.sort(key=lambda ab: -(driver_phi[ab[0]] * driver_phi[ab[1]]))
        combos = [{
            "description": f"{driver_labels[a]} + {driver_labels[b]}",
            "drivers": [str(driver_labels[a]), str(driver_labels[b])],
            "direction": "BREAK" if driver_phi[a] > 0 else "REJECT",
            "log_odds": float(driver_phi[a] + driver_phi[b]),
            "edge": float(edge(driver_phi[a] + driver_phi[b])),
            "kind": "aligned_pair",
            "active": True,
        } for a, b in pairs[:max_combos]]

        return {
            "prediction": {
                "p_break": p_break,
                "p_reject": 1.0 - p_break,
                "p_chop": float(probs[CHOP_IDX]),
                "conditional_on": "decisive outcome (BREAK or REJECT); p_chop from the multiclass model",
                "multiclass": {name: float(probs[i]) for i, name in enumerate(CLASSES)},
                "p_break_raw": float(_sigmoid(raw)),
                "base_rate": base,
                "edge": p_break - base,
                "method": "model",
                "calibration": self.calibrator.method,
            },
            "drivers": drivers,
            "combos": combos,
            "sections": {str(name): {"log_odds": float(section_phi[i]), "edge": float(section_edge[i])}
                         for i, name in enumerate(section_names)},
            "context": {
                "raw_score": raw,
                "bias": bias,
                "attribution": "TreeSHAP (LightGBM pred_contrib) on the binary model, log-odds",
                "edge_definition": "sigma(logit(base_rate) + contribution) - base_rate",
                "n_history": None if history is None else int(history.shape[0]),
            } | dict(context or {}),
        }

    def metadata(self) -> dict:
        """Everything but the boosters, as JSON-safe values (for persistence next to them)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "classes": list(CLASSES),
            "feature_names": list(self.feature_names),
            "base_rate": self.base_rate,
            "class_shares": list(self.class_shares),
            "num_threads": self.num_threads,
            "calibrator": self.calibrator.to_dict(),
            "class_calibrator": self.class_calibrator.to_dict(),
        }

    @classmethod
    def from_parts(cls, binary_booster: lgb.Booster, multiclass_booster: lgb.Booster, meta: Mapping) -> BreakPredictor:
        if list(meta["classes"]) != list(CLASSES):
            raise ValueError(f"class order {meta['classes']} differs from {CLASSES}")
        return cls(binary_booster, multiclass_booster, Calibrator.from_dict(meta["calibrator"]),
                   tuple(meta["feature_names"]), float(meta["base_rate"]), tuple(meta["class_shares"]),
                   int(meta["num_threads"]), ClassCalibrator.from_dict(meta.get("class_calibrator", {"method": "identity"})))


@dataclass
class TrainedBreakModel(BreakPredictor):
    """A fitted predictor plus the evidence for it: validation results, importance, data range."""

    config: BreakModelConfig = field(default_factory=BreakModelConfig)
    validation: dict[str, ValidationResult] = field(default_factory=dict)
    feature_importance: pl.DataFrame | None = None
    data_range: dict = field(default_factory=dict)

    def pooled_metrics(self) -> dict[str, float]:
        """Flat `<scheme>_<metric>` pooled metrics: wf_*, wf_cal_* (prequentially calibrated), lodo_*."""
        flat = {}
        for scheme, result in self.validation.items():
            prefix = METRIC_PREFIX[scheme]
            flat |= {f"{prefix}_{k}": v for k, v in result.pooled.items()}
            if result.pooled_calibrated is not None:
                flat |= {f"{prefix}_cal_{k}": v for k, v in result.pooled_calibrated.items()}
        return flat

    def serving_metrics(self) -> dict[str, float]:
        """The numbers a serving decision compares: walk-forward, prequentially calibrated (what serving outputs)."""
        result = self.validation.get(WALK_FORWARD)
        if result is None or result.pooled_calibrated is None:
            return {}
        return dict(result.pooled_calibrated)

    def reliability_tables(self) -> dict[str, pl.DataFrame]:
        tables = {}
        for scheme, result in self.validation.items():
            tables[f"{METRIC_PREFIX[scheme]} raw"] = result.reliability
            if result.reliability_calibrated is not None:
                tables[f"{METRIC_PREFIX[scheme]} calibrated"] = result.reliability_calibrated
        return tables


def train_break_model(X, y_labels, sessions, label_end_ns, ts_ns, feature_names: Sequence[str],
                      config: BreakModelConfig | None = None) -> TrainedBreakModel:
    """Validate (walk-forward + leave-one-day-out, purged, embargoed), calibrate on OOF, fit on all data."""
    config = config or BreakModelConfig()
    matrix, y_class, names = _training_inputs(X, y_labels, feature_names)
    days = as_session_days(sessions)
    label_end = np.asarray(label_end_ns, dtype=np.int64)
    anchor = np.asarray(ts_ns, dtype=np.int64)

    validation = {WALK_FORWARD: _cross_validate(
        WALK_FORWARD, walk_forward_splits(days, label_end, config.min_train_sessions, config.embargo_sessions, anchor),
        matrix, y_class, config)}
    _prequential_calibration(validation[WALK_FORWARD], y_class, config)
    if config.leave_one_day_out:
        validation[LEAVE_ONE_DAY_OUT] = _cross_validate(
            LEAVE_ONE_DAY_OUT, leave_one_day_out_splits(days, label_end, config.embargo_sessions, anchor,
                                                        config.min_train_sessions),
            matrix, y_class, config)

    wf = validation[WALK_FORWARD]
    wf_decisive = y_class[wf.oof_idx] != CHOP_IDX
    calibrator = Calibrator.fit(wf.oof_raw[wf_decisive], y_class[wf.oof_idx][wf_decisive] == BREAK_IDX,
                                config.isotonic_min_samples, config.calibration_clip, config.calibration_min_samples)

    decisive = y_class != CHOP_IDX
    binary, multiclass, importance = _fit_final_models(matrix, y_class, decisive, config, names)
    unique_days = np.unique(days)
    return TrainedBreakModel(
        binary_booster=binary,
        multiclass_booster=multiclass,
        calibrator=calibrator,
        feature_names=names,
        base_rate=float(np.mean(y_class[decisive] == BREAK_IDX)) if decisive.any() else float("nan"),
        class_shares=tuple(float(s) for s in np.bincount(y_class, minlength=len(CLASSES)) / y_class.size),
        num_threads=config.num_threads,
        config=config,
        validation=validation,
        feature_importance=importance,
        data_range={
            "first_session": str(unique_days[0]),
            "last_session": str(unique_days[-1]),
            "n_sessions": int(unique_days.size),
            "n_episodes": int(y_class.size),
            "n_decisive": int(decisive.sum()),
        },
    )


@dataclass(frozen=True)
class AsOfConfig:
    """How the served model of session D is made (SPEC §9, "as of D").

    The model serving D is trained on the labelled episodes of at most `window_sessions`
    sessions strictly before its retrain session R (R = D on a retrain day, else the latest
    retrain day before D), minus the `embargo_sessions` sessions just before R, and minus any
    episode whose label window ends at or after R's RTH open (purge). Retrain days are every
    `retrain_every`-th session of the trading calendar, so which model serves D does not
    depend on the order partitions were built in. Below `min_history_sessions` labelled
    sessions there is no model.
    """

    window_sessions: int = 120
    min_history_sessions: int = 5
    embargo_sessions: int = 1
    retrain_every: int = 5
    calibration_folds: int = 3  # inner walk-forward folds over the window's tail
    calibration_share: float = 0.3  # share of the window's sessions held out by those folds

    def as_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class WindowModel(BreakPredictor):
    """A model fitted on one as-of window, with the held-out evidence its calibrators came from."""

    config: BreakModelConfig = field(default_factory=BreakModelConfig)
    held_out: dict = field(default_factory=dict)
    feature_importance: pl.DataFrame | None = None
    data_range: dict = field(default_factory=dict)


def calibration_blocks(n_sessions: int, n_folds: int, share: float, embargo_sessions: int) -> list[np.ndarray]:
    """Session numbers of the inner walk-forward test blocks: the window's last `share` of sessions
    (at least one per fold), split into `n_folds` consecutive blocks; each block trains on the
    sessions before it less the embargo, so at least one session must remain for the first block."""
    tail = min(max(n_folds, int(round(share * n_sessions))), n_sessions - 1 - embargo_sessions)
    if tail < 1:
        return []
    return [block for block in np.array_split(np.arange(n_sessions - tail, n_sessions), min(n_folds, tail)) if block.size]


def fit_window_model(X, y_labels, sessions, label_end_ns, ts_ns, feature_names: Sequence[str],
                     config: BreakModelConfig | None = None, n_folds: int = 3, share: float = 0.3) -> WindowModel:
    """Fit the binary and multiclass boosters on one window and calibrate both on an inner walk-forward.

    Cost: `len(blocks) + 1` fits of each booster, whatever came before the window. The inner
    folds hold out the window's tail session blocks (purged and embargoed like every split);
    their held-out raw scores fit the binary calibrator (isotonic or Platt) and their held-out
    class probabilities the multiclass one. The served boosters are then refitted on the
    whole window; the calibrators map their scores as they mapped the fold models'.
    """
    config = config or BreakModelConfig()
    matrix, y_class, names = _training_inputs(X, y_labels, feature_names)
    days, code = np.unique(as_session_days(sessions), return_inverse=True)
    label_end = np.asarray(label_end_ns, dtype=np.int64)
    anchor = np.asarray(ts_ns, dtype=np.int64)
    decisive = y_class != CHOP_IDX
    if not decisive.any() or np.unique(y_class[decisive]).size < 2:
        raise ValueError("the window needs both BREAK and REJECT episodes to fit the binary model")

    raw_parts, probs_parts, y_parts = [], [], []
    blocks = calibration_blocks(days.size, n_folds, share, config.embargo_sessions)
    for block in blocks:
        block_start, _ = session_span_ns(days[block[0]].astype(dt.date))
        train = np.flatnonzero((code < block[0] - config.embargo_sessions)
                               & ~((anchor < session_span_ns(days[block[-1]].astype(dt.date))[1]) & (label_end >= block_start)))
        test = np.flatnonzero(np.isin(code, block))
        train_decisive = train[decisive[train]]
        if np.unique(y_class[train_decisive]).size < 2 or test.size == 0:
            continue
        binary = _train_booster(matrix[train_decisive], (y_class[train_decisive] == BREAK_IDX).astype(np.float64),
                                config, "binary")
        multiclass = _train_booster(matrix[train], y_class[train].astype(np.float64), config, "multiclass")
        raw_parts.append(binary.predict(matrix[test], raw_score=True, num_threads=config.num_threads))
        probs_parts.append(multiclass.predict(matrix[test], num_threads=config.num_threads))
        y_parts.append(y_class[test])

    held_out: dict = {"folds": len(raw_parts), "sessions": int(sum(b.size for b in blocks))}
    calibrator, class_calibrator = Calibrator.identity(), ClassCalibrator.identity()
    if raw_parts:
        raw, probs, y_held = np.concatenate(raw_parts), np.vstack(probs_parts), np.concatenate(y_parts)
        held_decisive = y_held != CHOP_IDX
        calibrator = Calibrator.fit(raw[held_decisive], y_held[held_decisive] == BREAK_IDX, config.isotonic_min_samples,
                                    config.calibration_clip, config.calibration_min_samples)
        class_calibrator = ClassCalibrator.fit(probs, y_held, config.calibration_min_samples)
        held_out |= {"episodes": int(y_held.size),
                     "auc_decisive": metrics.roc_auc(y_held[held_decisive] == BREAK_IDX, raw[held_decisive]),
                     "mean_class_shares_raw": [float(v) for v in probs.mean(axis=0)],
                     "mean_class_shares_calibrated": [float(v) for v in class_calibrator(probs).mean(axis=0)],
                     "held_out_class_shares": [float(v) for v in np.bincount(y_held, minlength=len(CLASSES)) / y_held.size],
                     # Honest for the fold models' raw scores; the calibrated map was fitted on these same episodes.
                     "reliability_raw": metrics.reliability_table(y_held[held_decisive] == BREAK_IDX,
                                                                  _sigmoid(raw[held_decisive]),
                                                                  config.reliability_bins).to_dicts()}

    binary, multiclass, importance = _fit_final_models(matrix, y_class, decisive, config, names)
    return WindowModel(
        binary_booster=binary,
        multiclass_booster=multiclass,
        calibrator=calibrator,
        feature_names=names,
        base_rate=float(np.mean(y_class[decisive] == BREAK_IDX)),
        class_shares=tuple(float(s) for s in np.bincount(y_class, minlength=len(CLASSES)) / y_class.size),
        num_threads=config.num_threads,
        class_calibrator=class_calibrator,
        config=config,
        held_out=held_out,
        feature_importance=importance,
        data_range={"first_session": str(days[0]), "last_session": str(days[-1]), "n_sessions": int(days.size),
                    "n_episodes": int(y_class.size), "n_decisive": int(decisive.sum())},
    )


def class_share_gap(predicted_shares, base_shares) -> float:
    """Largest absolute difference between mean predicted class shares and base rates (probability points)."""
    return float(np.max(np.abs(np.asarray(predicted_shares, dtype=np.float64) - np.asarray(base_shares, dtype=np.float64))))


def leave_one_day_out(X, y_labels, sessions, label_end_ns, ts_ns, config: BreakModelConfig | None = None) -> ValidationResult:
    """Leave-one-day-out over the given episodes (purged, embargoed both sides): a report, never a forecast."""
    config = config or BreakModelConfig()
    matrix = np.ascontiguousarray(X, dtype=np.float64)
    splits = leave_one_day_out_splits(as_session_days(sessions), np.asarray(label_end_ns, dtype=np.int64),
                                      config.embargo_sessions, np.asarray(ts_ns, dtype=np.int64), config.min_train_sessions)
    return _cross_validate(LEAVE_ONE_DAY_OUT, splits, matrix, class_indices(y_labels), config)
