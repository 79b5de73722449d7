"""The break model's data: episodes → one feature set's matrix, labels, sessions and label windows."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from ..lake import Lake
from ..lib.episodes import VectorDim, feature_set, vector_matrix
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


def training_set(episodes: pl.DataFrame) -> TrainingSet:
    """The lowest tier present sets the feature set, so every episode can be used: a model over
    mixed T0 and T3 history uses T0's dimensions (absent sections are dropped, never imputed)."""
    tier = min(episodes["tier"].unique().to_list(), key=tier_rank)
    return TrainingSet(episodes, tier, feature_set(tier))
