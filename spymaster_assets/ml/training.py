"""The break model's data: episodes → one feature set's matrix, labels, sessions and label windows."""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from ..lake import Lake
from ..lib.calendar import sessions_before, trading_sessions
from ..lib.episodes import VectorDim, feature_set, vector_layout, vector_matrix
from ..lib.tiers import tier_rank


@dataclass
class TrainingSet:
    episodes: pl.DataFrame  # metadata + raw vectors, sorted by time
    tier: str  # the feature set: dimensions a session of this tier supplies
    dims: list[VectorDim]

    @property
    def X(self) -> np.ndarray:
        # Raw, not robust-z: trees are invariant to monotone rescaling, and raw values keep the
        # model independent of which normalization window was current when it was trained.
        return vector_matrix(self.episodes, self.dims)

    @property
    def feature_names(self) -> list[str]:
        return [d.name for d in self.dims]

    def sessions(self) -> np.ndarray:
        return self.episodes["session"].to_numpy()

    def describe(self) -> dict:
        return {
            "episodes": self.episodes.height,
            "sessions": self.episodes["session"].n_unique(),
            "first_session": str(self.episodes["session"].min()),
            "last_session": str(self.episodes["session"].max()),
            "tier": self.tier,
            "dimensions": len(self.dims),
        }


def labelled_episodes(store: Lake, before: dt.date | None = None) -> pl.DataFrame:
    """Every labelled gold episode in the lake (of sessions strictly before `before`, if given)."""
    frames = [store.read("gold", "episodes", day) for day in store.partitions("gold", "episodes")
              if before is None or day < before.isoformat()]
    if not frames:
        return pl.DataFrame()
    return pl.concat(frames, how="vertical_relaxed").filter(pl.col("label").is_not_null()).sort("ts_ns")


def dims_named(names) -> list[VectorDim]:
    """The registry's dimensions of a stored model's feature names (an unknown name is an error)."""
    layout = {d.name: d for d in vector_layout()}
    unknown = [n for n in names if n not in layout]
    if unknown:
        raise ValueError(f"the model uses dimensions the episode layout no longer has, e.g. {unknown[:3]}")
    return [layout[n] for n in names]


def training_set(episodes: pl.DataFrame) -> TrainingSet:
    """The lowest tier present sets the feature set, so every episode can be used: a model over
    mixed T0 and T3 history uses T0's dimensions (absent sections are dropped, never imputed)."""
    tier = min(episodes["tier"].unique().to_list(), key=tier_rank)
    return TrainingSet(episodes, tier, feature_set(tier))


def complete_training_set(episodes: pl.DataFrame) -> tuple[TrainingSet, int]:
    """`training_set` without the episodes that have a NaN in a dimension of the feature set
    (bad input upstream: left out and counted, so the caller can report it)."""
    data = training_set(episodes)
    complete = np.isfinite(data.X).all(axis=1)
    if complete.all():
        return data, 0
    return training_set(episodes.filter(pl.Series(complete))), int((~complete).sum())


def retrain_session(session: dt.date, every: int) -> dt.date:
    """The retrain day whose model serves `session`: the latest trading-calendar session at or
    before it whose calendar index is a multiple of `every` (a fixed schedule, so the choice does
    not depend on which partitions exist or in which order they were built)."""
    calendar = trading_sessions()
    index = bisect.bisect_left(calendar, session)
    if index == len(calendar) or calendar[index] != session:
        raise ValueError(f"{session} is not a trading session")
    return calendar[index - index % every]


def window_partitions(store: Lake, before: dt.date, count: int, embargo_sessions: int) -> list[str]:
    """Up to `count` gold/episodes partitions strictly before `before`, leaving out the
    `embargo_sessions` trading sessions immediately before it (gap-tolerant: missing days are skipped)."""
    embargo_start = sessions_before(before, embargo_sessions)[0] if embargo_sessions else before
    earlier = [day for day in store.partitions("gold", "episodes") if day < embargo_start.isoformat()]
    return earlier[-count:] if count else []


def read_window(store: Lake, days: list[str], cache: dict[str, pl.DataFrame] | None = None) -> pl.DataFrame:
    """The labelled episodes of `days` (read once per range run through `cache`), sorted by time."""
    cache = {} if cache is None else cache
    for stale in [day for day in cache if days and day < days[0]]:  # a range run moves forward: keep one window
        del cache[stale]
    frames = []
    for day in days:
        if day not in cache:
            cache[day] = store.read("gold", "episodes", day).filter(pl.col("label").is_not_null())
        frames.append(cache[day])
    frames = [f for f in frames if f.height]
    return pl.concat(frames, how="vertical_relaxed").sort("ts_ns") if frames else pl.DataFrame()
