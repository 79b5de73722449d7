"""Robust z-scores for episode vectors: (x − median) / (1.4826·MAD), clipped to ±4.

Fitted per dimension on the episodes of a trailing window of sessions strictly before the
date being served (the caller chooses the window); raw vectors stay raw in storage and are
normalized at use, so refitting never forces a rebuild of gold_episodes.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .episodes import VectorDim

NORMALIZATION_SESSIONS = 60  # trailing window, strictly before the date
MAD_TO_SIGMA = 1.4826
CLIP = 4.0

STATS_SCHEMA: dict[str, pl.DataType] = {
    "dim": pl.Utf8,
    "median": pl.Float64,
    "scale": pl.Float64,
    "scale_source": pl.Utf8,
    "n": pl.Int64,
}


def fit_robust_z(episodes: pl.DataFrame, dims: list[VectorDim]) -> pl.DataFrame:
    """Median and scale per dimension from the non-null values of `episodes`.

    A dimension whose MAD is zero (a count that is almost always 0, say) falls back to the
    standard deviation, and to 1.0 when that is zero too: the scale must never divide by 0,
    and `scale_source` records which rule applied.
    """
    rows = []
    for d in dims:
        values = episodes[d.name].drop_nulls().drop_nans().to_numpy() if d.name in episodes.columns else np.array([])
        if values.size == 0:
            rows.append({"dim": d.name, "median": 0.0, "scale": 1.0, "scale_source": "no_data", "n": 0})
            continue
        median = float(np.median(values))
        mad = float(np.median(np.abs(values - median))) * MAD_TO_SIGMA
        std = float(values.std())
        scale, source = (mad, "mad") if mad > 0 else (std, "std") if std > 0 else (1.0, "constant")
        rows.append({"dim": d.name, "median": median, "scale": scale, "scale_source": source, "n": int(values.size)})
    return pl.DataFrame(rows, schema=STATS_SCHEMA)


def apply_robust_z(matrix: np.ndarray, stats: pl.DataFrame, dims: list[VectorDim]) -> np.ndarray:
    """Normalize raw vectors (columns in `dims` order) with fitted stats; float32 for FAISS."""
    by_dim = {row["dim"]: row for row in stats.iter_rows(named=True)}
    missing = [d.name for d in dims if d.name not in by_dim]
    if missing:
        raise KeyError(f"normalization stats lack {len(missing)} dimensions, e.g. {missing[:3]}")
    median = np.array([by_dim[d.name]["median"] for d in dims])
    scale = np.array([by_dim[d.name]["scale"] for d in dims])
    return np.clip((matrix - median) / scale, -CLIP, CLIP).astype(np.float32)
