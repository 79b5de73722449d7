"""What is known "as of" a session D: its normalization stats, its learned similarity metric,
its similarity index, and queries against them.

Used by the gold assets (fit + build + save), the retrieval_evaluation report, the
`spymaster query` CLI and the live engine. Everything here reads only what D's own
partitions of gold/normalization_stats, gold/similarity_metric and gold/similarity_index
hold, and those were fitted and built on sessions strictly before D.

Trailing windows (each bounded, so a day costs the same after 3 years as after 1):
- normalization: 60 sessions (SPEC §7);
- metric: 120 sessions (`lib.similarity_metric.METRIC_SESSIONS`) — a logistic fit of ~150
  weights wants a few thousand decided episodes, and half a year tracks regime changes;
- index: 250 sessions. A neighbour's weight carries exp(−age/τ) with τ = 60 sessions, so an
  episode 250 sessions old weighs e^(−250/60) ≈ 1.5 % of yesterday's; older ones can barely
  move an answer, but a longer window would grow each date's cost and storage without bound.

Storage of the index (per date, `gold/similarity_index/date=D/`): what serving needs and
no more — the window's robust-z vectors once, as float16 (n × dims; NaN where an episode's
tier lacks a dimension), the neighbour metadata, and D's metric. The per-tier FAISS
partitions (exact IndexFlatIP below 50 k vectors, HNSW above) are built from them on load:
adding vectors to a flat index is a copy, so storing one FAISS file per partition ×
granularity × tier (12 copies of each vector for a T3 history, ~4.4 KB per episode, with a
750-session window ~100 MB per date) bought nothing. float16 keeps 3 significant digits of
values clipped to ±4, far finer than the cosine ranking needs.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import polars as pl

from ..lake import Lake
from ..lib.calendar import et_to_ns, session_window, sessions_before
from ..lib.episodes import describe_setups, feature_set, vector_layout, vector_matrix
from ..lib.normalization import NORMALIZATION_SESSIONS, STATS_SCHEMA, apply_robust_z, fit_robust_z
from ..lib.retrieval import RetrievalConfig, RetrievalResult, TradingSessionAges, retrieve
from ..lib.similarity_index import IndexConfig, SimilarityIndex
from ..lib.similarity_metric import METRIC_SCHEMA, METRIC_SESSIONS, MetricConfig, SimilarityMetric, fit_metric
from ..lib.tiers import TIERS, tier_rank

INDEX_LOOKBACK_SESSIONS = 250
INDEX_SCHEMA_VERSION = "2"
NEIGHBOUR_COLUMNS = ("episode_id", "session", "ts_ns", "level_kind", "level_price", "direction", "time_bucket", "tier",
                     "label", "time_to_barrier_s", "mfe_atr", "mae_atr")
MANIFEST_FILE = "manifest.json"
VECTORS_FILE = "vectors.npy"
METADATA_FILE = "episodes.parquet"
METRIC_FILE = "metric.parquet"

# Which similarity an answer uses: the learned metric (served) or plain robust-z cosine (the baseline).
LEARNED_METRIC = "learned"
PLAIN_COSINE = "robust_z"
METRICS = (LEARNED_METRIC, PLAIN_COSINE)


def index_dir(store: Lake, session: dt.date | str) -> Path:
    return store.partition_dir("gold", "similarity_index", session)


def read_stats(store: Lake, session: dt.date | str) -> pl.DataFrame:
    return store.read("gold", "normalization_stats", session)


def tier_members(history: pl.DataFrame, tier: str) -> pl.DataFrame:
    """Episodes whose tier supplies `tier`'s dimensions (T3 episodes are also T0 episodes)."""
    present = history["tier"].unique().to_list()
    return history.filter(pl.col("tier").is_in([t for t in present if tier_rank(t) >= tier_rank(tier)]))


def fit_metrics(history: pl.DataFrame, stats: pl.DataFrame, config: MetricConfig = MetricConfig()) -> pl.DataFrame:
    """The learned metric of every feature set the history supplies (one block of rows per tier)."""
    frames = []
    if history.height:
        for tier in TIERS:
            members = tier_members(history, tier)
            if members.height == 0:
                continue
            dims = feature_set(tier)
            z = apply_robust_z(vector_matrix(members, dims), stats, dims)
            _require_supplied(z, members, tier)
            frames.append(fit_metric(z, members["label"].to_numpy(), [d.name for d in dims], config,
                                     sessions=members["session"].to_numpy()).frame(tier))
    return pl.concat(frames) if frames else pl.DataFrame(schema=METRIC_SCHEMA)


def _require_supplied(z: np.ndarray, episodes: pl.DataFrame, tier: str) -> None:
    """Episodes must carry every dimension their tier supplies (gold/episodes' blocking
    NO_NAN_IN_VECTORS check); name the sessions that do not rather than index a NaN."""
    bad = ~np.isfinite(z).all(axis=1)
    if bad.any():
        sessions = sorted({str(day) for day in episodes["session"].to_numpy()[bad]})
        raise ValueError(f"{int(bad.sum())} episodes of tier {tier} lack supplied dimensions (NaN) in sessions "
                         f"{sessions}: rebuild their gold/episodes (check NO_NAN_IN_VECTORS)")


@dataclass(frozen=True, eq=False)
class StoredIndex:
    """The content of one date's gold/similarity_index partition."""

    z: np.ndarray  # float16, n × len(dims), robust-z with the date's stats; NaN = dimension absent
    dims: tuple[str, ...]
    meta: pl.DataFrame  # NEIGHBOUR_COLUMNS, row i describes z[i]
    metric: pl.DataFrame  # METRIC_SCHEMA rows of the date's learned metric
    provenance: dict

    @classmethod
    def build(cls, history: pl.DataFrame, stats: pl.DataFrame, metric: pl.DataFrame,
              provenance: dict | None = None) -> StoredIndex:
        dims = vector_layout()
        if history.height == 0:
            z = np.empty((0, len(dims)), dtype=np.float16)
            meta = pl.DataFrame(schema=_neighbour_schema())
        else:
            z = apply_robust_z(vector_matrix(history, dims), stats, dims)
            for tier in history["tier"].unique().to_list():
                own = (history["tier"] == tier).to_numpy()
                _require_supplied(z[np.ix_(own, [i for i, d in enumerate(dims) if tier_rank(d.tier) <= tier_rank(tier)])],
                                  history.filter(pl.col("tier") == tier), tier)
            z = z.astype(np.float16)
            meta = history.select(NEIGHBOUR_COLUMNS)
        return cls(z, tuple(d.name for d in dims), meta, metric, dict(provenance or {}))

    @property
    def n_episodes(self) -> int:
        return self.meta.height

    def tiers(self) -> list[str]:
        present = self.meta["tier"].unique().to_list()
        return [t for t in TIERS if any(tier_rank(p) >= tier_rank(t) for p in present)]

    def similarity_metric(self, tier: str, metric: str = LEARNED_METRIC) -> SimilarityMetric:
        names = [d.name for d in feature_set(tier)]
        if metric == PLAIN_COSINE:
            return SimilarityMetric.identity(names)
        if metric != LEARNED_METRIC:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if not (self.metric["tier"] == tier).any():
            # The tier's episodes are all older than the metric's (shorter) window: nothing was
            # learned for it, so it is compared by plain cosine.
            return SimilarityMetric.identity(names)
        return SimilarityMetric.from_frame(self.metric, tier, names)

    def tier_index(self, tier: str, metric: str = LEARNED_METRIC, config: IndexConfig = IndexConfig()) -> SimilarityIndex | None:
        """The FAISS partitions of one feature set in the chosen metric's space (None: no member)."""
        members = np.flatnonzero(np.isin(self.meta["tier"].to_numpy(),
                                         [t for t in TIERS if tier_rank(t) >= tier_rank(tier)]))
        if members.size == 0:
            return None
        columns = [self.dims.index(d.name) for d in feature_set(tier)]
        z = self.z[np.ix_(members, columns)].astype(np.float32)
        if not np.isfinite(z).all():
            raise ValueError(f"stored vectors of tier {tier} members have absent dimensions")
        chosen = self.similarity_metric(tier, metric)
        return SimilarityIndex.build(chosen.transform(z), self.meta[members], config,
                                     provenance=self.provenance | {"tier": tier, "metric": chosen.method})

    def manifest(self) -> dict:
        return {"schema_version": INDEX_SCHEMA_VERSION, "n_episodes": self.n_episodes, "dims": list(self.dims),
                "vector_dtype": "float16", "tiers": self.tiers(), "provenance": self.provenance,
                "latest_indexed_session": str(self.meta["session"].max()) if self.n_episodes else None}

    def save(self, directory: Path) -> None:
        """Write into `directory` (a staging directory the caller publishes atomically)."""
        np.save(directory / VECTORS_FILE, self.z, allow_pickle=False)
        self.meta.write_parquet(directory / METADATA_FILE, compression="zstd")
        self.metric.write_parquet(directory / METRIC_FILE, compression="zstd")
        (directory / MANIFEST_FILE).write_text(json.dumps(self.manifest(), indent=2, default=str))

    @classmethod
    def load(cls, directory: Path) -> StoredIndex:
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
        if manifest["schema_version"] != INDEX_SCHEMA_VERSION:
            raise ValueError(f"{directory}: index schema_version {manifest['schema_version']} != {INDEX_SCHEMA_VERSION}")
        z = np.load(directory / VECTORS_FILE, allow_pickle=False)
        meta = pl.read_parquet(directory / METADATA_FILE)
        if z.shape != (meta.height, len(manifest["dims"])):
            raise ValueError(f"{directory}: vectors {z.shape} do not match {meta.height} episodes")
        return cls(z, tuple(manifest["dims"]), meta, pl.read_parquet(directory / METRIC_FILE), manifest["provenance"])


# -- building D's as-of partitions (what the gold assets do, one session at a time) ----------
# `stamp` is the lake metadata every artifact carries (schema_version, config_hash); `cache` is
# one dict per range run, so overlapping windows read each episodes partition once.


def write_normalization_stats(store: Lake, session: dt.date, stamp: dict, cache: dict | None = None) -> dict:
    """Robust-z stats of the 60 sessions strictly before `session` → gold/normalization_stats."""
    history, used = history_for(store, session, NORMALIZATION_SESSIONS, cache)
    stats = fit_robust_z(history, vector_layout())
    store.write_frames("gold", "normalization_stats", session, [stats], STATS_SCHEMA,
                       stamp | {"fitted_on_sessions": ",".join(day.isoformat() for day in used)})
    return {"episodes": history.height, **_window(used)}


def write_similarity_metric(store: Lake, session: dt.date, stamp: dict, cache: dict | None = None,
                            config: MetricConfig = MetricConfig()) -> dict:
    """The metric learned on the 120 sessions strictly before `session`, in the space of the
    session's stats → gold/similarity_metric."""
    history, used = history_for(store, session, METRIC_SESSIONS, cache)
    metric = fit_metrics(history, read_stats(store, session), config)
    store.write_frames("gold", "similarity_metric", session, [metric], METRIC_SCHEMA,
                       stamp | {"fitted_on_sessions": ",".join(day.isoformat() for day in used)})
    methods = dict(metric.group_by("tier", maintain_order=True).agg(pl.col("method").first()).iter_rows())
    return {"episodes": history.height, "methods": methods, **_window(used)}


def write_similarity_index(store: Lake, session: dt.date, stamp: dict, cache: dict | None = None) -> dict:
    """The 250-session window's vectors, metadata and the session's metric → gold/similarity_index."""
    history, used = history_for(store, session, INDEX_LOOKBACK_SESSIONS, cache)
    provenance = stamp | {"as_of": session.isoformat(), "window_sessions": INDEX_LOOKBACK_SESSIONS,
                          "first_session": used[0].isoformat() if used else None}
    stored = StoredIndex.build(history, read_stats(store, session),
                               store.read("gold", "similarity_metric", session), provenance)
    staging = store.staging_dir("gold", "similarity_index", session)
    stored.save(staging)
    written = sum(f.stat().st_size for f in staging.iterdir())
    store.publish_dir(staging, "gold", "similarity_index", session)
    return {"episodes": stored.n_episodes, "tiers": stored.tiers(), "bytes": written,
            "latest_indexed_session": stored.manifest()["latest_indexed_session"], **_window(used)}


def _window(used: list[dt.date]) -> dict:
    return {"sessions_used": len(used), "first_session": used[0].isoformat() if used else None,
            "last_session": used[-1].isoformat() if used else None}


def _neighbour_schema() -> dict[str, pl.DataType]:
    from ..lib.episodes import episode_schema

    schema = episode_schema()
    return {c: schema[c] for c in NEIGHBOUR_COLUMNS}


@dataclass
class AsOf:
    """What is known for answering queries on `session`: its stats and its index (lazy).

    `metric` chooses the similarity: the learned metric (what is served) or plain robust-z
    cosine (the baseline of the evaluation) — both from the same stored partition.
    """

    store: Lake
    session: dt.date
    config: RetrievalConfig = field(default_factory=RetrievalConfig)
    metric: str = LEARNED_METRIC
    index_config: IndexConfig = field(default_factory=IndexConfig)
    _indices: dict[str, SimilarityIndex | None] = field(default_factory=dict)

    @cached_property
    def stats(self) -> pl.DataFrame:
        return read_stats(self.store, self.session)

    @cached_property
    def ages(self) -> TradingSessionAges:
        return TradingSessionAges.exchange_calendar()

    @cached_property
    def stored(self) -> StoredIndex | None:
        path = index_dir(self.store, self.session)
        if not path.exists():
            return None
        if not (path / MANIFEST_FILE).exists():
            raise ValueError(f"{path} holds no {MANIFEST_FILE} (an index written before schema {INDEX_SCHEMA_VERSION}?): "
                             "rematerialize gold/similarity_metric and gold/similarity_index for this session")
        return StoredIndex.load(path)

    def index(self, tier: str) -> SimilarityIndex | None:
        if tier not in self._indices:
            self._indices[tier] = None if self.stored is None else self.stored.tier_index(tier, self.metric,
                                                                                          self.index_config)
        return self._indices[tier]

    def vectors(self, setups: pl.DataFrame, tier: str) -> np.ndarray:
        dims = feature_set(tier)
        z = apply_robust_z(vector_matrix(setups, dims), self.stats, dims)
        return self.stored.similarity_metric(tier, self.metric).transform(z)

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
    at_ns = et_to_ns(session, clock)
    state = store.read("silver", "state", session)
    rows = state_up_to(state, session, at_ns, level_kind)
    if rows["t_ns"][-1] == at_ns:  # a grid time (every HH:MM in the session): described once for all of them
        setups = grid_setups(store, session, str(store.partition_file("silver", "state", session)))
        return setups.filter(pl.col("episode_id") == query_anchor_id(session, level_kind, at_ns)), rows.row(-1, named=True)
    return describe_setups(state, query_anchors(rows.tail(1), session, at_ns), session_window(session).rth_open_ns), \
        rows.row(-1, named=True)


def setup_from_state(state: pl.DataFrame, session: dt.date, at_ns: int, level_kind: str) -> tuple[pl.DataFrame, dict]:
    """`setup_at` on state rows in hand (the live engine's rows so far): only rows at or before `at_ns` are read."""
    rows = state_up_to(state, session, at_ns, level_kind)
    return describe_setups(state, query_anchors(rows.tail(1), session, at_ns), session_window(session).rth_open_ns), \
        rows.row(-1, named=True)


def state_up_to(state: pl.DataFrame, session: dt.date, at_ns: int, level_kind: str) -> pl.DataFrame:
    """The level's state rows at or before `at_ns`, oldest first; an error naming the levels that have state if none."""
    rows = state.filter((pl.col("level_kind") == level_kind) & (pl.col("t_ns") <= at_ns)).sort("t_ns")
    if rows.height == 0:
        known = sorted(state["level_kind"].unique().to_list())
        raise ValueError(f"{level_kind} has no state at or before {at_ns} ns on {session} (levels with state: {known})")
    return rows


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


def query_answer(store: Lake, session: dt.date, clock: dt.time, level_kind: str, neighbours: int = 10,
                 as_of: AsOf | None = None) -> dict:
    """The answer to "price is at `level_kind` at `clock` on `session`: what happened next in
    similar past setups?" — the state, the distribution with its interval, effective N, base
    rates and the nearest neighbours with their outcomes. JSON-serializable.

    When price is outside the level's approach zone at `clock` the answer says so
    (`near_level` false, `distance_atr`, `note`) and carries no outcome distribution: past
    setups at the level say nothing about a price that is not near it. `as_of` is the
    session's `AsOf` when the caller keeps one warm (the query service); else it is loaded."""
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
    nearness = level_nearness(row["d_atr"])
    answer |= nearness
    if not nearness["near_level"]:
        return answer | {"retrieval": None, "note": nearness["note"]}
    result = (as_of or AsOf(store, session)).answer(setup)[0]
    if result is None:
        return answer | {"retrieval": None, "note": "no earlier sessions are indexed for this tier yet"}
    retrieval = result.to_dict()
    retrieval["neighbours"] = retrieval["neighbours"][:neighbours]
    return answer | {"retrieval": retrieval}


def level_nearness(d_atr: float | None) -> dict:
    """Is price inside the level's approach zone (|d_atr| ≤ APPROACH_D_ATR, SPEC §6)? Outside it an
    anchor cannot happen before price travels that far, so no setup answer applies."""
    from ..lib.features.context import APPROACH_D_ATR

    if d_atr is None or not np.isfinite(d_atr):
        return {"near_level": False, "distance_atr": None,
                "note": "the distance to the level is unknown at this time (no ATR yet): no setup answer"}
    distance = abs(float(d_atr))
    if distance <= APPROACH_D_ATR:
        return {"near_level": True, "distance_atr": distance}
    side = "above" if d_atr > 0 else "below"
    return {"near_level": False, "distance_atr": distance,
            "note": f"price is {distance:.2f} ATR {side} the level, outside its approach zone "
                    f"(within {APPROACH_D_ATR:g} ATR): no setup answer, since price is not near the level"}


def query_anchor_id(session: dt.date, level_kind: str, at_ns: int) -> str:
    return f"query_{session}_{level_kind}_{at_ns}"


def query_anchors(rows: pl.DataFrame, session: dt.date, at_ns: int | pl.Expr) -> pl.DataFrame:
    """"What if price touched the level now": an anchor per state row, at `at_ns` (a time, or the
    rows' own `t_ns`), coming from the side the row's dir_sign says."""
    at = pl.lit(at_ns, dtype=pl.Int64) if isinstance(at_ns, int) else at_ns
    return rows.select(
        pl.format("query_{}_{}_{}", pl.lit(session.isoformat()), "level_kind", at).alias("event_id"),
        pl.lit(session).alias("session"), at.alias("ts_ns"), "level_kind", "level_price",
        pl.when(pl.col("dir_sign") > 0).then(pl.lit("UP")).otherwise(pl.lit("DOWN")).alias("direction"),
        pl.col("dir_sign").cast(pl.Int8), "atr",
    )


@lru_cache(maxsize=8)
def grid_setups(store: Lake, session: dt.date, state_version: str) -> pl.DataFrame:
    """The setup of a query at every grid time and level of the session, in one `describe_setups`
    call: it costs about what one setup does (its work is per vector dimension, not per anchor), so a
    process answering several queries on a session (the query service, or one query that the
    retrieval and the model both describe) describes it once. `state_version` (the state
    partition's current file) keys the cache, so a rebuilt state table is described again."""
    state = store.read("silver", "state", session)
    return describe_setups(state, query_anchors(state, session, pl.col("t_ns")), session_window(session).rth_open_ns)
