"""Retrieval "as of" a session: its normalization stats, its indices, and queries against them.

Used by the similarity_index asset (build + save), the retrieval_evaluation report, the
`spymaster query` CLI and the live engine. Everything here reads only what a session's
own partitions of gold/normalization_stats and gold/similarity_index hold, and those were
fitted and built on sessions strictly before it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

from ..lake import Lake
from ..lib.calendar import et_to_ns, session_window, sessions_before
from ..lib.episodes import describe_setups, feature_set, vector_matrix
from ..lib.normalization import apply_robust_z
from ..lib.retrieval import RetrievalConfig, RetrievalResult, TradingSessionAges, retrieve
from ..lib.similarity_index import IndexConfig, SimilarityIndex
from ..lib.tiers import TIERS, tier_rank

INDEX_LOOKBACK_SESSIONS = 750  # ~3 years of history behind each as-of index
NEIGHBOUR_COLUMNS = ("episode_id", "session", "ts_ns", "level_kind", "level_price", "direction", "time_bucket", "tier",
                     "label", "time_to_barrier_s", "mfe_atr", "mae_atr")


def index_dir(store: Lake, session: dt.date | str, tier: str) -> Path:
    return store.partition_dir("gold", "similarity_index", session) / f"tier={tier}"


def read_stats(store: Lake, session: dt.date | str) -> pl.DataFrame:
    return store.read("gold", "normalization_stats", session)


def build_indices(history: pl.DataFrame, stats: pl.DataFrame, config: IndexConfig = IndexConfig(),
                  provenance: dict | None = None) -> dict[str, SimilarityIndex]:
    """One index per feature set: tier T holds every episode whose tier supplies T's dimensions,
    described by exactly those dimensions (absent sections dropped, never zero-filled)."""
    indices: dict[str, SimilarityIndex] = {}
    if history.height == 0:
        return indices
    present = set(history["tier"].unique().to_list())
    for tier in TIERS:
        members = history.filter(pl.col("tier").is_in([t for t in present if tier_rank(t) >= tier_rank(tier)]))
        if members.height == 0:
            continue
        dims = feature_set(tier)
        vectors = apply_robust_z(vector_matrix(members, dims), stats, dims)
        indices[tier] = SimilarityIndex.build(vectors, members.select(NEIGHBOUR_COLUMNS), config,
                                              provenance=(provenance or {}) | {"tier": tier})
    return indices


@dataclass
class AsOf:
    """What is known for answering queries on `session`: its stats and its indices (lazy)."""

    store: Lake
    session: dt.date
    config: RetrievalConfig = field(default_factory=RetrievalConfig)
    _indices: dict[str, SimilarityIndex | None] = field(default_factory=dict)

    @cached_property
    def stats(self) -> pl.DataFrame:
        return read_stats(self.store, self.session)

    @cached_property
    def ages(self) -> TradingSessionAges:
        return TradingSessionAges.exchange_calendar()

    def index(self, tier: str) -> SimilarityIndex | None:
        if tier not in self._indices:
            path = index_dir(self.store, self.session, tier)
            self._indices[tier] = SimilarityIndex.load(path) if path.exists() else None
        return self._indices[tier]

    def vectors(self, setups: pl.DataFrame, tier: str) -> np.ndarray:
        dims = feature_set(tier)
        return apply_robust_z(vector_matrix(setups, dims), self.stats, dims)

    def answer(self, setups: pl.DataFrame) -> list[RetrievalResult | None]:
        """The outcome distribution of each setup (rows of gold_episodes or `describe_setups`, one
        session tier); all None when no index of that tier exists yet (no earlier history at all)."""
        if setups.height == 0:
            return []
        tiers = setups["tier"].unique().to_list()
        if len(tiers) != 1:
            raise ValueError(f"answer() expects setups of one session tier, got {tiers}")
        index = self.index(tiers[0])
        if index is None:
            return [None] * setups.height
        z = self.vectors(setups, tiers[0])
        keys = setups.select("level_kind", "direction", "time_bucket").rows()
        return [retrieve(index, z[i], self.session, key, self.config, session_calendar=self.ages)
                for i, key in enumerate(keys)]


def setup_at(store: Lake, session: dt.date, clock: dt.time, level_kind: str) -> tuple[pl.DataFrame, dict]:
    """"What if price touched `level_kind` at `clock` ET": the setup vector (as if an anchor
    happened then) and the state row it was described from."""
    state = store.read("silver", "state", session)
    at_ns = et_to_ns(session, clock)
    rows = state.filter((pl.col("level_kind") == level_kind) & (pl.col("t_ns") <= at_ns)).sort("t_ns")
    if rows.height == 0:
        known = sorted(state["level_kind"].unique().to_list())
        raise ValueError(f"{level_kind} has no state at or before {clock} on {session} (levels with state: {known})")
    row = rows.row(-1, named=True)
    direction = "UP" if row["dir_sign"] > 0 else "DOWN"
    anchor = pl.DataFrame({
        "event_id": [f"query_{session}_{level_kind}_{at_ns}"], "session": [session], "ts_ns": [at_ns],
        "level_kind": [level_kind], "level_price": [row["level_price"]], "direction": [direction],
        "dir_sign": [row["dir_sign"]], "atr": [row["atr"]],
    }).with_columns(pl.col("dir_sign").cast(pl.Int8))
    return describe_setups(state, anchor, session_window(session).rth_open_ns), row


def history_for(store: Lake, session: dt.date, sessions: int = INDEX_LOOKBACK_SESSIONS,
                cache: dict[dt.date, pl.DataFrame] | None = None) -> tuple[pl.DataFrame, list[dt.date]]:
    """Labelled gold episodes of the trailing sessions strictly before `session` (gap-tolerant).

    A range run asks this for consecutive sessions whose windows overlap almost entirely;
    passing one `cache` dict for the run reads each episodes partition once, not once per day.
    """
    cache = {} if cache is None else cache
    present = [day for day in sessions_before(session, sessions) if store.has_partition("gold", "episodes", day)]
    for day in present:
        if day not in cache:
            cache[day] = store.read("gold", "episodes", day).filter(pl.col("label").is_not_null())
    frames = [cache[day] for day in present]
    if not frames:
        return pl.DataFrame(), present
    return pl.concat(frames, how="vertical_relaxed"), present


# State features shown with a query, in the trader's order of attention.
QUERY_STATE_FEATURES = ("d_atr", "attempt_index", "approach_velocity", "velocity_2min", "tape_imbalance_60s",
                        "ofi_60s", "defending_depth", "wall_ratio_30min", "gex_band_2")


def query_answer(store: Lake, session: dt.date, clock: dt.time, level_kind: str, neighbours: int = 10) -> dict:
    """The answer to "price is at `level_kind` at `clock` on `session`: what happened next in
    similar past setups?" — the state, the distribution with its interval, effective N, base
    rates and the nearest neighbours with their outcomes. JSON-serializable."""
    from ..lib.features import registry

    setup, row = setup_at(store, session, clock, level_kind)
    if setup.height == 0:
        raise ValueError(f"no setup could be described for {level_kind} at {clock} on {session}")
    meaning = {f.name: f.meaning for f in registry.all_features()}
    answer = {
        "session": session.isoformat(),
        "time_et": clock.strftime("%H:%M"),
        "level_kind": level_kind,
        "level_price": row["level_price"],
        "spot": row["spot"],
        "direction": setup["direction"][0],
        "time_bucket": setup["time_bucket"][0],
        "tier": setup["tier"][0],
        "state": {name: {"value": row[name], "meaning": meaning[name]} for name in QUERY_STATE_FEATURES
                  if row.get(name) is not None},
    }
    result = AsOf(store, session).answer(setup)[0]
    if result is None:
        return answer | {"retrieval": None, "note": "no earlier sessions are indexed for this tier yet"}
    retrieval = result.to_dict()
    retrieval["neighbours"] = retrieval["neighbours"][:neighbours]
    return answer | {"retrieval": retrieval}
