"""Price kinematics and approach features at each grid time, from a causal price series.

The price series is (ts_ns, price) = bar closes stamped at the time they become usable
(`price_series_from_bars`: 10 s bars at T1+, 1-min bars at T0). Its *value at an instant τ*
is the last price with ts_ns ≤ τ (a step function: an interval without trades leaves the
price where it was). It is undefined before the first point.

Kinematics (Savitzky–Golay-style one-sided fits)
- The series is sampled on a regular grid of `sample_s` seconds (10 at T1+, 60 at T0) at the
  instants τ_k = τ − k·sample_s, where τ = t rounded down to the sampling grid (= t on the
  30 s grid at T1+; the last completed minute at T0).
- velocity_{W}min / acceleration_{W}min: first / second derivative at τ of the least-squares
  quadratic through the samples in the closed window [τ − W, τ] (W/sample_s + 1 samples),
  in points/min and points/min². Null with fewer than 4 defined samples (at T0: the 1- and
  2-min windows have only 2–3 samples and are always null).
- jerk_{J}min: third derivative at τ of a least-squares cubic over [τ − J, τ] (J = 5 min),
  points/min³; null with fewer than 6 samples.
- Fixed point spacing makes every fit a fixed weight vector (precomputed, one per sample
  count), applied as Σ_k w_k·(y_k − y_0) in a fixed order: the value at t depends on the
  samples in its window only, bit for bit.
- Values are level-independent (sign of price motion). "Toward the level" =
  value × dir_sign (`kinematics_toward_level`); the state-table columns of FEATURES are the
  toward-level values.

Approach (over the last `lookback_min` = 10 min; toward-level sign)
- approach_velocity = dir_sign · (p(τ) − p(τ − 10 min)) / 10   [points/min]
- approach_distance_atr = dir_sign · (p(τ) − p(τ − 10 min)) / atr_t   [ATR; negative = away]
- approach_bars = number of consecutive completed 1-min bars, newest first, whose close
  moved toward the level: dir_sign · (c_m − c_{m−1}) > 0, with c_m = p(m) at the minute marks
  m ≤ t (= the 1-min closes); capped at lookback_min.

Displacement (`displacement_toward_atr`, on the finest causal path: trade prints at T1+, 1-min
closes at T0 — not the 10 s bar series, whose last close can be up to 10 s old at a touch)
- displacement_5min_toward_atr = dir_sign · (s(t) − s(t − 300 s)) / atr_t   [ATR]
  with s(τ) the last print at or before τ. The speed of the last 5 minutes of an approach,
  read exactly at the touch: the quadratic-fit velocities are evaluated at the 10 s grid and
  blend the whole window, so they carry this only approximately.

Trailing-buffer rule: the rows at t are unchanged when the series keeps only the points with
ts_ns > t − max(window, lookback) plus the last point at or before that instant (the step
value at the oldest sample instant).
"""

from __future__ import annotations

from functools import lru_cache
from math import factorial

import numpy as np
import polars as pl

from .registry import feature

NS_PER_S = 1_000_000_000
NS_PER_MIN = 60 * NS_PER_S
KINEMATIC_WINDOWS_MIN = (1, 2, 3, 5, 10, 20)
JERK_WINDOW_MIN = 5
MIN_POINTS_QUADRATIC = 4
MIN_POINTS_CUBIC = 6
APPROACH_LOOKBACK_MIN = 10
DISPLACEMENT_WINDOW_S = 300
SERIES_SCHEMA: dict[str, pl.DataType] = {"ts_ns": pl.Int64, "price": pl.Float64}


def _kin_tier(window_min: int, degree_points: int) -> str:
    # Lowest tier able to supply the column: 1-min closes give W + 1 samples in a W-min window.
    return "T0" if window_min + 1 >= degree_points else "T1"


FEATURES = [
    *[
        f
        for w in KINEMATIC_WINDOWS_MIN
        for f in (
            feature(f"velocity_{w}min", "kinematics", _kin_tier(w, MIN_POINTS_QUADRATIC), "pt/min", f"{w}min",
                    f"speed of price toward the level over the last {w} min (quadratic fit, at t)", True),
            feature(f"acceleration_{w}min", "kinematics", _kin_tier(w, MIN_POINTS_QUADRATIC), "pt/min^2", f"{w}min",
                    f"is the move toward the level speeding up (+) or slowing (−), last {w} min", True),
        )
    ],
    feature(f"jerk_{JERK_WINDOW_MIN}min", "kinematics", _kin_tier(JERK_WINDOW_MIN, MIN_POINTS_CUBIC), "pt/min^3",
            f"{JERK_WINDOW_MIN}min", "change of acceleration toward the level (cubic fit)", True),
    feature("approach_velocity", "approach", "T0", "pt/min", f"{APPROACH_LOOKBACK_MIN}min",
            "average speed toward the level over the last 10 min", True),
    feature("approach_bars", "approach", "T0", "bars", f"{APPROACH_LOOKBACK_MIN}min",
            "consecutive 1-min bars closing closer to the level (max 10)", True),
    feature("approach_distance_atr", "approach", "T0", "ATR", f"{APPROACH_LOOKBACK_MIN}min",
            "net distance travelled toward the level in the last 10 min, in ATRs", True),
    feature("displacement_5min_toward_atr", "approach", "T0", "ATR", f"{DISPLACEMENT_WINDOW_S}s",
            "net move toward the level over the last 5 min, last price now vs 5 min ago, in ATRs", True),
]


def price_series_from_bars(bars: pl.DataFrame) -> pl.DataFrame:
    """(ts_ns = bar_end_ns, price = close): each close at the time it becomes usable."""
    return bars.sort("bar_start_ns").select(pl.col("bar_end_ns").alias("ts_ns"), pl.col("close").alias("price")).cast(SERIES_SCHEMA)


def sample_series(series: pl.DataFrame, instants: np.ndarray) -> np.ndarray:
    """Step value of the series at each instant (last price with ts_ns ≤ instant), NaN before
    the first point. Works on arrays of any shape."""
    series = series.sort("ts_ns", maintain_order=True)
    ts = series["ts_ns"].to_numpy()
    px = series["price"].to_numpy().astype(np.float64)
    instants = np.asarray(instants, dtype=np.int64)
    idx = np.searchsorted(ts, instants, side="right") - 1
    out = np.full(instants.shape, np.nan)
    ok = idx >= 0
    out[ok] = px[idx[ok]]
    return out


@lru_cache(maxsize=None)
def fit_weights(n_points: int, degree: int, order: int, spacing_min: float) -> np.ndarray:
    """Weights w (newest sample first) with Σ w_k y_k = the `order`-th derivative at the newest
    sample of the least-squares polynomial of `degree` through n equally spaced samples."""
    k = np.arange(n_points, dtype=np.float64)
    scale = max(n_points - 1, 1) * spacing_min  # u = x / scale ∈ [−1, 0]: well-conditioned
    design = np.vander(-k / max(n_points - 1, 1), degree + 1, increasing=True)
    rows = np.linalg.pinv(design)
    weights = rows[order] * factorial(order) / scale**order
    weights.setflags(write=False)
    return weights


def _sample_matrix(series: pl.DataFrame, times: np.ndarray, n_samples: int, sample_ns: int) -> np.ndarray:
    tau = times - np.mod(times, sample_ns)
    instants = tau[:, None] - sample_ns * np.arange(n_samples, dtype=np.int64)[None, :]
    return sample_series(series, instants)


def _fit(samples: np.ndarray, n_window: int, degree: int, order: int, min_points: int, spacing_min: float) -> np.ndarray:
    """Derivative of `order` per row from the first n_window samples (newest first). Rows with
    fewer defined samples fit over those they have (a suffix is undefined only before the
    series starts); null (NaN) below min_points."""
    window = samples[:, :n_window]
    n_defined = np.sum(~np.isnan(window), axis=1)
    out = np.full(len(samples), np.nan)
    for n in np.unique(n_defined[n_defined >= min_points]):
        rows = np.flatnonzero(n_defined == n)
        w = fit_weights(int(n), degree, order, spacing_min)
        base = window[rows, 0]
        acc = w[0] * (window[rows, 0] - base)
        for k in range(1, int(n)):  # fixed order: the result depends only on this row's samples
            acc = acc + w[k] * (window[rows, k] - base)
        out[rows] = acc
    return out


def kinematics(
    series: pl.DataFrame,
    times,
    *,
    windows_min=KINEMATIC_WINDOWS_MIN,
    jerk_window_min: int = JERK_WINDOW_MIN,
    sample_s: int = 10,
) -> pl.DataFrame:
    """Level-independent velocity/acceleration per window and jerk, one row per time:
    t_ns, velocity_{W}min, acceleration_{W}min …, jerk_{J}min (NaN → null)."""
    times = np.asarray(times, dtype=np.int64)
    sample_ns = int(sample_s) * NS_PER_S
    spacing_min = sample_s / 60.0
    n_of = lambda w: int(round(w * 60 / sample_s)) + 1  # noqa: E731 — closed window [τ − W, τ]
    n_max = max(n_of(w) for w in (*windows_min, jerk_window_min))
    samples = _sample_matrix(series, times, n_max, sample_ns)
    columns: dict[str, np.ndarray] = {"t_ns": times}
    for w in windows_min:
        n = n_of(w)
        columns[f"velocity_{w}min"] = _fit(samples, n, 2, 1, MIN_POINTS_QUADRATIC, spacing_min)
        columns[f"acceleration_{w}min"] = _fit(samples, n, 2, 2, MIN_POINTS_QUADRATIC, spacing_min)
    columns[f"jerk_{jerk_window_min}min"] = _fit(samples, n_of(jerk_window_min), 3, 3, MIN_POINTS_CUBIC, spacing_min)
    return pl.DataFrame(columns).fill_nan(None)


def kinematics_toward_level(kin: pl.DataFrame, queries: pl.DataFrame) -> pl.DataFrame:
    """queries (t_ns, level_kind, level_price, dir_sign, …) plus every kinematics column of
    `kin` multiplied by dir_sign ("toward the level")."""
    value_cols = [c for c in kin.columns if c != "t_ns"]
    return queries.join(kin, on="t_ns", how="left", maintain_order="left").with_columns(
        [(pl.col(c) * pl.col("dir_sign").cast(pl.Float64)).alias(c) for c in value_cols]
    )


def approach_features(
    series: pl.DataFrame,
    queries: pl.DataFrame,
    atr: pl.DataFrame | None = None,
    lookback_min: int = APPROACH_LOOKBACK_MIN,
    sample_s: int = 10,
) -> pl.DataFrame:
    """queries plus approach_velocity, approach_bars, approach_distance_atr (see module doc).

    atr: frame (t_ns, atr) — the ATR known at each t; when None, a queries column `atr` is
    used if present, else approach_distance_atr is null. A null or non-positive ATR gives null."""
    t = queries["t_ns"].to_numpy().astype(np.int64)
    sign = queries["dir_sign"].to_numpy().astype(np.float64)
    sample_ns = int(sample_s) * NS_PER_S
    tau = t - np.mod(t, sample_ns)
    move = sample_series(series, tau) - sample_series(series, tau - lookback_min * NS_PER_MIN)
    toward = sign * move

    minute0 = t - np.mod(t, NS_PER_MIN)
    marks = minute0[:, None] - NS_PER_MIN * np.arange(lookback_min + 1, dtype=np.int64)[None, :]
    closes = sample_series(series, marks)
    steps_toward = (sign[:, None] * (closes[:, :-1] - closes[:, 1:])) > 0  # NaN compares False
    streak = np.where(steps_toward.all(axis=1), lookback_min, np.argmin(steps_toward, axis=1))

    if atr is not None:
        atr_values = queries.select("t_ns").join(atr.select("t_ns", "atr"), on="t_ns", how="left", maintain_order="left")["atr"]
    elif "atr" in queries.columns:
        atr_values = queries["atr"]
    else:
        atr_values = pl.Series([None] * queries.height, dtype=pl.Float64)
    atr_np = atr_values.cast(pl.Float64).fill_null(np.nan).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        distance_atr = np.where(atr_np > 0, toward / atr_np, np.nan)
    return queries.with_columns(
        pl.Series("approach_velocity", toward / lookback_min).fill_nan(None),
        pl.Series("approach_bars", streak.astype(np.int32)),
        pl.Series("approach_distance_atr", distance_atr).fill_nan(None),
    )


def displacement_toward_atr(path: pl.DataFrame, queries: pl.DataFrame, window_s: int = DISPLACEMENT_WINDOW_S) -> pl.Series:
    """dir_sign · (s(t) − s(t − window_s)) / atr per query row (t_ns, dir_sign, atr), s = step value
    of the causal price path (ts_ns, price) — see module doc. Null before the path has a price
    at t − window_s or without a positive ATR (not enough data, never "no such event")."""
    t = queries["t_ns"].to_numpy().astype(np.int64)
    moved = sample_series(path, t) - sample_series(path, t - window_s * NS_PER_S)
    sign = queries["dir_sign"].cast(pl.Float64).to_numpy()
    atr = queries["atr"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(atr > 0, sign * moved / atr, np.nan)
    return pl.Series("displacement_5min_toward_atr", value).fill_nan(None)
