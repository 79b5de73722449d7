"""Stream projections (SPEC §10): q10/q50/q90 of a stream's next 10 bars as cubic paths.

For one stream, a sample is a (bar, level) with LOOKBACK bars of the stream's own history and
the current values of the other streams (all ≤ t); its targets are the stream's change over
the next ANCHOR_BARS bars (FORWARD-LOOKING: targets only, never features). One LightGBM
quantile model per (anchor, quantile); a projected path is the cubic through the current value
(h = 0) and the three predicted anchor values, evaluated at h = 1…HORIZON and clipped to [−1, 1].
Splits are by session (never by row): a session's bars are autocorrelated, so a row split would
score a model on near-copies of its training rows.

Not yet wired as an as-of asset (see the streams report for what is): this module is the pure
part, tested on data whose future is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import polars as pl

PROJECTED_STREAMS = ("sigma_p", "sigma_m", "sigma_f", "sigma_b", "sigma_r")
CONTEXT_STREAMS = ("sigma_m", "sigma_f", "sigma_b", "sigma_d", "sigma_s")
LOOKBACK = 16
HORIZON = 10
ANCHOR_BARS = (2, 5, 10)
QUANTILES = (0.1, 0.5, 0.9)


@dataclass(frozen=True)
class ProjectionConfig:
    n_estimators: int = 120
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 20
    seed: int = 0

    def params(self, alpha: float) -> dict:
        return {"objective": "quantile", "alpha": alpha, "learning_rate": self.learning_rate,
                "num_leaves": self.num_leaves, "min_data_in_leaf": self.min_data_in_leaf, "seed": self.seed,
                "deterministic": True, "num_threads": 1, "verbose": -1}


def feature_names(stream: str) -> list[str]:
    context = [c for c in CONTEXT_STREAMS if c != stream]
    return [f"{stream}_lag{k}" for k in range(LOOKBACK)] + [f"{stream}_slope", f"{stream}_curvature"] + context


def projection_samples(streams: pl.DataFrame, stream: str, with_targets: bool = True) -> pl.DataFrame:
    """One row per (session, level, bar) with a full lookback (and, for training, a full horizon):
    features from bars ≤ t, targets `target_h{h}` = value at t + h − value at t."""
    by = ["session", "level_kind"]
    ordered = streams.sort([*by, "t_ns"])
    lags = [pl.col(stream).shift(k).over(by).alias(f"{stream}_lag{k}") for k in range(LOOKBACK)]
    smooth = pl.col(f"{stream}_smooth") if f"{stream}_smooth" in streams.columns else pl.col(stream)
    derivs = [smooth.diff().over(by).alias(f"{stream}_slope")]
    frame = ordered.with_columns(*lags, *derivs).with_columns(
        pl.col(f"{stream}_slope").diff().over(by).alias(f"{stream}_curvature"))
    names = feature_names(stream)
    keep = ["session", "level_kind", "t_ns", *names]
    if with_targets:
        targets = [(pl.col(stream).shift(-h).over(by) - pl.col(stream)).alias(f"target_h{h}") for h in ANCHOR_BARS]
        frame = frame.with_columns(targets)
        keep += [f"target_h{h}" for h in ANCHOR_BARS]
    return frame.select(keep).drop_nulls()


@dataclass
class StreamProjector:
    """The quantile models of one stream: (anchor bar, quantile) → booster."""

    stream: str
    boosters: dict[tuple[int, float], lgb.Booster] = field(default_factory=dict)

    @classmethod
    def fit(cls, samples: pl.DataFrame, stream: str, config: ProjectionConfig = ProjectionConfig()) -> StreamProjector:
        if samples.height < config.min_data_in_leaf * 2:
            raise ValueError(f"{stream}: {samples.height} samples are too few to fit projections")
        X = samples.select(feature_names(stream)).to_numpy()
        boosters = {}
        for h in ANCHOR_BARS:
            y = samples[f"target_h{h}"].to_numpy()
            for q in QUANTILES:
                data = lgb.Dataset(X, label=y, feature_name=feature_names(stream), free_raw_data=False)
                boosters[(h, q)] = lgb.train(config.params(q), data, num_boost_round=config.n_estimators)
        return cls(stream, boosters)

    def anchors(self, samples: pl.DataFrame) -> np.ndarray:
        """[rows, quantile, anchor] predicted change at each anchor bar, quantiles sorted (no crossing)."""
        X = samples.select(feature_names(self.stream)).to_numpy()
        out = np.stack([np.stack([self.boosters[(h, q)].predict(X) for h in ANCHOR_BARS], axis=1) for q in QUANTILES], axis=1)
        return np.sort(out, axis=1)

    def paths(self, samples: pl.DataFrame) -> np.ndarray:
        """[rows, quantile, HORIZON] projected stream values at t + 1 … t + HORIZON."""
        current = samples[f"{self.stream}_lag0"].to_numpy()
        return np.sort(cubic_paths(current, self.anchors(samples)), axis=1)  # bands never cross between anchors


def cubic_paths(current: np.ndarray, anchor_changes: np.ndarray) -> np.ndarray:
    """The cubic through (0, 0) and (h, Δ_h) for the anchor bars, plus the current value, at
    h = 1…HORIZON, clipped to the streams' range [−1, 1]."""
    hs = np.asarray((0, *ANCHOR_BARS), dtype=float)
    vandermonde = np.vander(hs, 4, increasing=True)  # exactly determined: 4 points, 4 coefficients
    rows, quantiles, _ = anchor_changes.shape
    points = np.concatenate([np.zeros((rows, quantiles, 1)), anchor_changes], axis=2)
    coefficients = np.linalg.solve(vandermonde, points.reshape(-1, 4).T).T.reshape(rows, quantiles, 4)
    grid = np.vander(np.arange(1, HORIZON + 1, dtype=float), 4, increasing=True)
    return np.clip(current[:, None, None] + coefficients @ grid.T, -1.0, 1.0)


def session_split(samples: pl.DataFrame, holdout_sessions: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Train on every session but the last `holdout_sessions`, validate on those (walk-forward)."""
    sessions = sorted(samples["session"].unique().to_list())
    if len(sessions) <= holdout_sessions:
        raise ValueError(f"{len(sessions)} sessions cannot hold out {holdout_sessions}")
    cut = sessions[-holdout_sessions]
    return samples.filter(pl.col("session") < cut), samples.filter(pl.col("session") >= cut)


def band_coverage(projector: StreamProjector, samples: pl.DataFrame) -> dict:
    """Share of realised anchor changes inside the predicted q10–q90 band (target ≈ 0.8), per
    anchor bar, and the q50 mean absolute error against a no-change forecast's."""
    predicted = projector.anchors(samples)
    realised = samples.select([f"target_h{h}" for h in ANCHOR_BARS]).to_numpy()
    inside = (realised >= predicted[:, 0, :]) & (realised <= predicted[:, -1, :])
    return {
        "n": samples.height,
        "sessions": samples["session"].n_unique(),
        "coverage_q10_q90": {h: float(inside[:, i].mean()) for i, h in enumerate(ANCHOR_BARS)},
        "mae_q50": {h: float(np.abs(realised[:, i] - predicted[:, 1, i]).mean()) for i, h in enumerate(ANCHOR_BARS)},
        "mae_no_change": {h: float(np.abs(realised[:, i]).mean()) for i, h in enumerate(ANCHOR_BARS)},
    }
