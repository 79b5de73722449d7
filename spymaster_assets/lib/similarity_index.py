"""FAISS cosine indices of episode vectors, partitioned by level kind × direction × time bucket.

SPEC §7. Similarity is cosine: rows are L2-normalized (a copy; the caller's robust-z matrix
is untouched) and searched by inner product. Every episode sits in one partition at each of
three granularities —

    kind_direction_bucket  (level_kind, direction, time_bucket)   up to 6 × 2 × 5 = 60
    kind_direction         (level_kind, direction)                up to 12
    direction              (direction,)                           2

— and an index is built for every key that holds at least one episode. A query names its
finest key; `choose_partition` walks fine → coarse and takes the first partition holding at
least `min_partition` eligible episodes. When even the direction partition is smaller it is
used anyway and the choice says so (`below_min_partition`), so the caller can flag the
answer instead of silently getting nothing.

Eligible means "from a session strictly before the query session" when the query names one.
Each partition stores its episodes in session order, so the eligible set is a prefix of the
partition's local ids: partition choice and base rates are a binary search, and the search
itself is restricted to that prefix with an `IDSelectorRange`. The SPEC builds one index per
date from earlier sessions only, in which case the prefix is the whole partition; the prefix
makes an index spanning many sessions (backtests, the benchmark) equally leak-free.

Exact `IndexFlatIP` serves partitions below `hnsw_threshold` vectors, `IndexHNSWFlat`
(M = 32, inner product) larger ones. HNSW graphs built by several OpenMP threads depend on
thread timing, so builds use `build_threads` (default 1) to stay reproducible; searches run
on one thread (`faiss_threads`), which is also what a single 30 s live query wants.

Zero-norm rows (every dimension exactly at its median) have no direction. `normalize_L2`
leaves them as zero vectors, so their similarity to every query is exactly 0 — never NaN,
never preferred over a positively similar episode. (`retrieval.retrieve` treats a zero-norm
*query* as carrying no information.)

Outcome labels outside BREAK/REJECT/CHOP (null: horizon not reached) stay searchable but
get outcome code −1; retrieval skips them as neighbours and base rates ignore them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import faiss
import numpy as np
import polars as pl

SCHEMA_VERSION = "1"

LEVEL_KINDS = ("PM_HIGH", "PM_LOW", "OR_HIGH", "OR_LOW", "SMA_90", "EMA_20")
DIRECTIONS = ("UP", "DOWN")
TIME_BUCKETS = ("T0_15", "T15_30", "T30_60", "T60_120", "T120_180")
OUTCOMES = ("BREAK", "REJECT", "CHOP")
UNLABELLED = -1

# Finest first; a key's length identifies its granularity.
GRANULARITIES = ("kind_direction_bucket", "kind_direction", "direction")
KEY_COLUMNS = {
    "kind_direction_bucket": ("level_kind", "direction", "time_bucket"),
    "kind_direction": ("level_kind", "direction"),
    "direction": ("direction",),
}
REQUIRED_COLUMNS = ("episode_id", "session", "level_kind", "direction", "time_bucket", "label")

MANIFEST_FILE = "manifest.json"
METADATA_FILE = "metadata.parquet"

PartitionKey = tuple[str, ...]
FineKey = tuple[str, str, str]  # (level_kind, direction, time_bucket)

_EPOCH = np.datetime64("1970-01-01", "D")
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


@dataclass(frozen=True)
class IndexConfig:
    """Everything that changes what a built index returns (hashed into the manifest)."""

    min_partition: int = 50
    hnsw_threshold: int = 50_000  # partitions with at least this many vectors use HNSW
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    # Searches use a beam of max(hnsw_ef_search, k): a beam narrower than k returns fewer
    # than k hits, so the 500-neighbour over-fetch gets a 500-wide beam and this floor only
    # matters for small k.
    hnsw_ef_search: int = 128
    build_threads: int = 1  # >1 builds HNSW faster but not reproducibly

    def __post_init__(self) -> None:
        if self.min_partition < 1 or self.hnsw_threshold < 1 or self.hnsw_m < 2:
            raise ValueError(f"invalid IndexConfig {self}")
        if self.hnsw_ef_construction < 1 or self.hnsw_ef_search < 1 or self.build_threads < 1:
            raise ValueError(f"invalid IndexConfig {self}")

    def config_hash(self, dim: int) -> str:
        payload = json.dumps({"schema_version": SCHEMA_VERSION, "dim": dim, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PartitionChoice:
    """Which partition a query was answered from, and how many episodes it could use."""

    key: PartitionKey
    granularity: str
    n_eligible: int  # episodes of the partition from sessions before the query session
    below_min_partition: bool  # even the coarsest fallback had fewer than min_partition


@dataclass(frozen=True)
class SearchHits:
    """Nearest episodes, most similar first; `rows` index the index's metadata frame."""

    partition: PartitionChoice | None  # None: no episode of the query's direction at all
    rows: np.ndarray  # int64
    similarities: np.ndarray  # float32 cosine in [-1, 1]


@contextlib.contextmanager
def faiss_threads(count: int = 1) -> Iterator[None]:
    """Run the enclosed FAISS calls on `count` OpenMP threads, then restore the previous setting.

    One thread makes a single-query search reproducible and avoids OpenMP start-up cost;
    it is set here rather than at import so importing this module changes nothing globally.
    """
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def granularity_of(key: PartitionKey) -> str:
    return GRANULARITIES[3 - len(key)]


def fallback_chain(key: FineKey) -> tuple[PartitionKey, PartitionKey, PartitionKey]:
    """The keys a fine key falls back through, finest first."""
    kind, direction, bucket = key
    return (kind, direction, bucket), (kind, direction), (direction,)


def to_day_numbers(sessions: Sequence[dt.date] | np.ndarray | pl.Series | dt.date) -> np.ndarray | int:
    """Session dates as int64 days since 1970-01-01 (a scalar for one date)."""
    if isinstance(sessions, dt.date):  # the per-query case: plain ordinals, no numpy scalar round trip
        return sessions.toordinal() - _EPOCH_ORDINAL
    if isinstance(sessions, pl.Series):
        return sessions.cast(pl.Date).cast(pl.Int64).to_numpy()
    return (np.asarray(sessions, dtype="datetime64[D]") - _EPOCH).astype(np.int64)


def l2_normalized(vectors: np.ndarray) -> np.ndarray:
    """A C-contiguous float32 copy with unit-norm rows; zero rows stay zero (no NaN)."""
    matrix = np.array(vectors, dtype=np.float32, order="C", copy=True, ndmin=2)
    faiss.normalize_L2(matrix)
    return matrix


class _Partition:
    """One FAISS index plus what a query needs without touching polars.

    Local FAISS id i is global metadata row `rows[i]`; rows are in session order so that
    "sessions before D" is the prefix `[0, n_before(D))`.
    """

    def __init__(self, key: PartitionKey, index: faiss.Index, rows: np.ndarray, session_days: np.ndarray,
                 outcome_codes: np.ndarray) -> None:
        self.key = key
        self.index = index
        self.rows = rows
        self.session_days = session_days
        counts = np.zeros((rows.size + 1, len(OUTCOMES)), dtype=np.int64)
        for code in range(len(OUTCOMES)):
            counts[1:, code] = np.cumsum(outcome_codes == code)
        self.cumulative_outcomes = counts  # row j: labelled outcome counts among the first j episodes

    @property
    def size(self) -> int:
        return int(self.rows.size)

    @property
    def is_hnsw(self) -> bool:
        return isinstance(self.index, faiss.IndexHNSW)

    def n_before(self, day: int | None) -> int:
        if day is None:
            return self.size
        return int(np.searchsorted(self.session_days, day, side="left"))

    def outcome_counts_before(self, day: int | None) -> np.ndarray:
        return self.cumulative_outcomes[self.n_before(day)]


def _partition_rows(meta: pl.DataFrame, session_days: np.ndarray) -> dict[PartitionKey, np.ndarray]:
    """Global rows of every non-empty partition at every granularity, each in session order.

    Sorted keys and stable sorts make the layout a pure function of the metadata, which is
    what lets `load` rebuild it from the Parquet instead of storing it twice.
    """
    partitions: dict[PartitionKey, np.ndarray] = {}
    for granularity in GRANULARITIES:
        columns = KEY_COLUMNS[granularity]
        keyed = meta.select(*columns).with_row_index("_row")
        for key_values, group in sorted(keyed.group_by(list(columns)), key=lambda kv: kv[0]):
            rows = group["_row"].to_numpy().astype(np.int64)
            rows = np.sort(rows)
            partitions[tuple(key_values)] = rows[np.argsort(session_days[rows], kind="stable")]
    return partitions


def _outcome_codes(labels: pl.Series) -> np.ndarray:
    mapping = {name: code for code, name in enumerate(OUTCOMES)}
    return labels.replace_strict(mapping, default=UNLABELLED, return_dtype=pl.Int8).to_numpy()


def _validate(vectors: np.ndarray, meta: pl.DataFrame) -> None:
    if vectors.ndim != 2 or vectors.shape[0] != meta.height or vectors.shape[1] < 1:
        raise ValueError(f"vectors {vectors.shape} do not match {meta.height} metadata rows")
    if not np.isfinite(vectors).all():
        raise ValueError("vectors contain NaN or inf; SPEC §7 stores none")
    missing = [c for c in REQUIRED_COLUMNS if c not in meta.columns]
    if missing:
        raise ValueError(f"metadata lacks columns {missing}")
    if meta.schema["session"] != pl.Date:
        raise TypeError(f"metadata 'session' must be pl.Date, got {meta.schema['session']}")
    for column in ("episode_id", "session", "level_kind", "direction", "time_bucket"):
        if meta[column].null_count():
            raise ValueError(f"metadata column {column!r} has nulls")
    for column, allowed in (("direction", DIRECTIONS), ("time_bucket", TIME_BUCKETS)):
        unknown = set(meta[column].unique().to_list()) - set(allowed)
        if unknown:
            raise ValueError(f"metadata column {column!r} has unknown values {sorted(unknown)}")


class SimilarityIndex:
    """Partitioned cosine indices over episode vectors plus the metadata of every row."""

    def __init__(self, meta: pl.DataFrame, partitions: dict[PartitionKey, _Partition], dim: int,
                 config: IndexConfig, provenance: dict | None = None) -> None:
        self.meta = meta
        self.dim = dim
        self.config = config
        self.provenance = dict(provenance or {})
        self._partitions = partitions
        self.session_days = to_day_numbers(meta["session"])
        self.outcome_codes = _outcome_codes(meta["label"])

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def build(cls, vectors: np.ndarray, meta: pl.DataFrame, config: IndexConfig | None = None,
              provenance: dict | None = None) -> SimilarityIndex:
        """Index `vectors` (n × d, robust-z normalized) whose row i is described by `meta` row i.

        `provenance` (e.g. the normalization stats' hash and the date served) is stored
        verbatim in the manifest.
        """
        config = config or IndexConfig()
        vectors = np.asarray(vectors)
        _validate(vectors, meta)
        unit_rows = l2_normalized(vectors)
        session_days = to_day_numbers(meta["session"])
        outcome_codes = _outcome_codes(meta["label"])
        dim = unit_rows.shape[1]
        partitions: dict[PartitionKey, _Partition] = {}
        with faiss_threads(config.build_threads):
            for key, rows in _partition_rows(meta, session_days).items():
                index = _new_index(dim, rows.size, config)
                index.add(np.ascontiguousarray(unit_rows[rows]))
                partitions[key] = _Partition(key, index, rows, session_days[rows], outcome_codes[rows])
        return cls(meta, partitions, dim, config, provenance)

    # -- inspection -----------------------------------------------------------------------

    @property
    def n_episodes(self) -> int:
        return self.meta.height

    def has_partition(self, key: PartitionKey) -> bool:
        return key in self._partitions

    def partition_sizes(self) -> dict[PartitionKey, int]:
        return {key: part.size for key, part in self._partitions.items()}

    def partition_kinds(self) -> dict[PartitionKey, str]:
        return {key: "hnsw" if part.is_hnsw else "flat" for key, part in self._partitions.items()}

    def with_min_partition(self, min_partition: int) -> SimilarityIndex:
        """The same indices with another fallback threshold (it only routes queries, so no rebuild)."""
        config = replace(self.config, min_partition=min_partition)
        return SimilarityIndex(self.meta, self._partitions, self.dim, config, self.provenance)

    # -- query ----------------------------------------------------------------------------

    def choose_partition(self, key: FineKey, before_session: dt.date | None = None) -> PartitionChoice | None:
        """The finest partition of `key`'s fallback chain with ≥ min_partition eligible episodes.

        Falls back to the direction partition even when it is smaller (flagged); None only
        when the index has no episode of that direction at all.
        """
        day = None if before_session is None else to_day_numbers(before_session)
        return self._choose(key, day)

    def _choose(self, key: FineKey, day: int | None) -> PartitionChoice | None:
        if len(key) != 3:
            raise ValueError(f"query key must be (level_kind, direction, time_bucket), got {key!r}")
        coarsest = None
        for candidate in fallback_chain(key):
            part = self._partitions.get(candidate)
            if part is None:
                continue
            n_eligible = part.n_before(day)
            if n_eligible >= self.config.min_partition:
                return PartitionChoice(candidate, granularity_of(candidate), n_eligible, False)
            coarsest = PartitionChoice(candidate, granularity_of(candidate), n_eligible, True)
        return coarsest

    def search(self, query_vector: np.ndarray, key: FineKey, k: int,
               before_session: dt.date | None = None) -> SearchHits:
        """Up to `k` most similar episodes in the chosen partition, from sessions before `before_session`."""
        day = None if before_session is None else to_day_numbers(before_session)
        choice = self._choose(key, day)
        if choice is None:
            return SearchHits(None, np.empty(0, np.int64), np.empty(0, np.float32))
        rows, sims = self.search_partition(choice.key, l2_normalized(query_vector), k, choice.n_eligible)
        return SearchHits(choice, rows, sims)

    def search_partition(self, key: PartitionKey, unit_query: np.ndarray, k: int,
                         n_eligible: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw top-k of one partition for an already L2-normalized (1 × d) query.

        Only the first `n_eligible` local ids (the earliest sessions) are searched. Returns
        global metadata rows and similarities, most similar first, on one FAISS thread.
        """
        part = self._partitions[key]
        limit = part.size if n_eligible is None else min(n_eligible, part.size)
        k = min(k, limit)
        if k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        selector = faiss.IDSelectorRange(0, limit) if limit < part.size else None
        if part.is_hnsw:
            params = faiss.SearchParametersHNSW(efSearch=max(self.config.hnsw_ef_search, k), sel=selector)
        else:
            params = faiss.SearchParameters(sel=selector) if selector is not None else None
        with faiss_threads(1):
            sims, local = part.index.search(unit_query.reshape(1, -1), k, params=params)
        found = local[0] >= 0  # HNSW may return fewer than k
        return part.rows[local[0][found]], sims[0][found]

    def outcome_counts_before(self, key: PartitionKey, before_session: dt.date | None) -> np.ndarray:
        """Labelled BREAK/REJECT/CHOP counts of a partition's episodes before a session."""
        day = None if before_session is None else to_day_numbers(before_session)
        return self._partitions[key].outcome_counts_before(day)

    # -- persistence ----------------------------------------------------------------------

    def manifest(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "dim": self.dim,
            "n_episodes": self.n_episodes,
            "min_partition": self.config.min_partition,
            "hnsw_threshold": self.config.hnsw_threshold,
            "config": asdict(self.config),
            "config_hash": self.config.config_hash(self.dim),
            "metadata_file": METADATA_FILE,
            "partitions": [
                {"granularity": granularity_of(key), "key": list(key), "size": part.size,
                 "kind": "hnsw" if part.is_hnsw else "flat", "file": _partition_file(key)}
                for key, part in self._partitions.items()
            ],
            "provenance": self.provenance,
        }

    def save(self, directory: str | Path) -> Path:
        """Write the index to `directory`, replacing any previous one only once the new one is complete.

        Everything goes to a hidden sibling directory first; the swap is two renames on the
        same filesystem, and the old directory is restored if the second rename fails.
        """
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex[:12]
        staging = target.parent / f".{target.name}.tmp-{token}"
        retired = target.parent / f".{target.name}.old-{token}"
        staging.mkdir()
        try:
            for key, part in self._partitions.items():
                faiss.write_index(part.index, str(staging / _partition_file(key)))
            self.meta.write_parquet(staging / METADATA_FILE)
            (staging / MANIFEST_FILE).write_text(json.dumps(self.manifest(), indent=2, default=str))
            if target.exists():
                target.rename(retired)
                try:
                    staging.rename(target)
                except BaseException:
                    retired.rename(target)
                    raise
                shutil.rmtree(retired, ignore_errors=True)
            else:
                staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return target

    @classmethod
    def load(cls, directory: str | Path) -> SimilarityIndex:
        """Read an index written by `save`; searches return exactly what the saved index returned."""
        directory = Path(directory)
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
        if manifest["schema_version"] != SCHEMA_VERSION:
            raise ValueError(f"index schema_version {manifest['schema_version']} != {SCHEMA_VERSION}")
        config = IndexConfig(**manifest["config"])
        dim = int(manifest["dim"])
        if manifest["config_hash"] != config.config_hash(dim):
            raise ValueError("index manifest config_hash does not match its config")
        meta = pl.read_parquet(directory / manifest["metadata_file"])
        session_days = to_day_numbers(meta["session"])
        outcome_codes = _outcome_codes(meta["label"])
        layout = _partition_rows(meta, session_days)
        partitions: dict[PartitionKey, _Partition] = {}
        for entry in manifest["partitions"]:
            key = tuple(entry["key"])
            index = faiss.read_index(str(directory / entry["file"]))
            rows = layout.get(key)
            if rows is None or index.ntotal != rows.size or rows.size != entry["size"] or index.d != dim:
                raise ValueError(f"partition {key} on disk does not match its metadata")
            partitions[key] = _Partition(key, index, rows, session_days[rows], outcome_codes[rows])
        if set(partitions) != set(layout):
            raise ValueError("index manifest partitions do not match the metadata")
        return cls(meta, partitions, dim, config, manifest.get("provenance"))


def _new_index(dim: int, size: int, config: IndexConfig) -> faiss.Index:
    if size < config.hnsw_threshold:
        return faiss.IndexFlatIP(dim)
    index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = config.hnsw_ef_construction
    index.hnsw.efSearch = config.hnsw_ef_search
    return index


def _partition_file(key: PartitionKey) -> str:
    # "__" separates parts because level kinds themselves contain "_" (PM_HIGH, SMA_90).
    return f"{granularity_of(key)}__{'__'.join(key)}.faiss"
