"""Outcome distribution of an approach from its most similar past episodes (SPEC §8).

    query → over-fetch 500 from the chosen partition (`similarity_index`)
          → drop neighbours from the query's session or later
          → keep at most 2 per session (the most similar)
          → top k = 50

Each neighbour is weighted `w_i = kernel(sim_i) · exp(−age_i / τ)`, τ = 60 sessions.

Kernel (default `"exp"`): `kernel(s) = exp((s − 1) / h)`, h = 0.2. On unit vectors
‖x − y‖² = 2(1 − s), so this is a Gaussian kernel in Euclidean distance with variance h
(the von Mises–Fisher kernel on the sphere): always positive, 1 for an identical setup,
and a neighbour 0.2 less similar counts e^-1 ≈ 0.37 as much. The posterior depends on
weights only through ratios, so the kernel's scale is irrelevant. `"power"` —
`max(s, 0)^p` — is the alternative; it gives anti-correlated setups exactly zero weight.

Age is the number of trading sessions from the neighbour's session up to the query's
(the previous session is age 1): with a sorted array of known session dates, or any
callable (`SessionAges`), via `TradingSessionAges`; with nothing given it falls back to
business days (`numpy.busday_count`), which over-counts exchange holidays (a handful a
year: a slightly faster decay, never a wrong order).

Outcome distribution: a Dirichlet posterior whose prior is `α` pseudo-counts (default 4)
spread as the partition's base rates, and whose data are the neighbours' outcome weights
rescaled to the effective sample size `n = (Σw)² / Σw²`:

    a_o  = Σ_{i:o} w_i · n / Σw + α · base(o)
    p(o) = a_o / (n + α)

so few or very unequal neighbours shrink the answer toward the base rate.

Base rates come from the labelled episodes of sessions strictly before the query's (the same
leak-free set the neighbours come from), shrunk hierarchically so that no outcome ever has a
base rate of exactly 0 or 1:

    base_global = (counts_global + m · uniform) / (n_global + m)
    base_dir    = (counts_dir    + m · base_global) / (n_dir + m)
    base_kd     = (counts_kd     + m · base_dir) / (n_kd + m)          kind × direction
    base        = (counts_kdb    + m · base_kd) / (n_kdb + m)          kind × direction × bucket

with m = `base_pseudo_counts` (default 10): a partition's own rate dominates once it has
well over m labelled episodes, a thin partition borrows from its parent, and an empty one is
its parent. (The earlier rule — the raw rate of the partition used — answered p(BREAK) = 0
with a [0 %, 0 %] interval whenever that partition's history held no BREAK and no neighbour
was a BREAK.) With α > 0 every Dirichlet concentration is then positive, so every interval
has positive width. With no labelled history at all the base is uniform.

The 90% interval for p(BREAK) is the equal-tailed interval of the Beta marginal
Beta(a_BREAK, Σa − a_BREAK) (`scipy.special.betaincinv`, the function behind
`scipy.stats.beta.ppf`, without its per-call overhead). `insufficient_history` is set
when n < 10. Every answer also reports how alike its neighbours are: the 10th percentile,
median and 90th percentile of the kept neighbours' cosine similarity.

A zero-norm query (every dimension at its median) has no direction and is similar to
nothing: it gets no neighbours, i.e. the base rate with `insufficient_history`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import polars as pl
from scipy.special import betaincinv

from .jsonable import jsonable
from .similarity_index import (
    DIRECTIONS,
    OUTCOMES,
    FineKey,
    PartitionChoice,
    SimilarityIndex,
    fallback_chain,
    l2_normalized,
    to_day_numbers,
)

KERNELS = ("exp", "power")

# (neighbour sessions, query session) → age in trading sessions, all as datetime64[D].
SessionAges = Callable[[np.ndarray, np.datetime64], np.ndarray]


@dataclass(frozen=True)
class RetrievalConfig:
    """The constants of SPEC §8; the defaults are the SPEC's."""

    overfetch: int = 500
    k: int = 50
    max_per_session: int = 2
    tau_sessions: float = 60.0  # e-folding age of a neighbour's weight (inf: no decay)
    prior_strength: float = 4.0  # α, in pseudo-counts
    kernel: str = "exp"
    kernel_bandwidth: float = 0.2  # h of the "exp" kernel
    kernel_power: float = 2.0  # p of the "power" kernel
    credible_level: float = 0.90
    min_effective_n: float = 10.0
    base_pseudo_counts: float = 10.0  # m of the hierarchical base-rate shrinkage (0: raw rates)

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {self.kernel!r}")
        if not (1 <= self.k <= self.overfetch) or self.max_per_session < 1:
            raise ValueError(f"need 1 ≤ k ≤ overfetch and max_per_session ≥ 1: {self}")
        if self.tau_sessions <= 0 or self.prior_strength < 0 or self.kernel_bandwidth <= 0 or self.kernel_power <= 0 \
                or self.base_pseudo_counts < 0:
            raise ValueError(f"tau, bandwidth and power must be > 0 and prior_strength ≥ 0: {self}")
        if not 0 < self.credible_level < 1:
            raise ValueError(f"credible_level must be in (0, 1), got {self.credible_level}")


# -- session ages ------------------------------------------------------------------------


class TradingSessionAges:
    """Ages counted on a known list of trading sessions (binary search, no per-query conversion).

    Age = number of listed sessions in [neighbour session, query session). Dates that are
    not listed still get a consistent count (the listed sessions between them).
    """

    def __init__(self, sessions: Sequence[dt.date] | np.ndarray) -> None:
        self._days = np.sort(np.asarray(sessions, dtype="datetime64[D]"))

    @classmethod
    def exchange_calendar(cls) -> TradingSessionAges:
        """The CME ES session calendar of `lib.calendar` (loads pandas_market_calendars once)."""
        from .calendar import trading_sessions

        return cls(trading_sessions())

    def __call__(self, neighbour_sessions: np.ndarray, query_session: np.datetime64) -> np.ndarray:
        query_position = np.searchsorted(self._days, query_session, side="left")
        return (query_position - np.searchsorted(self._days, neighbour_sessions, side="left")).astype(np.float64)


def business_day_ages(neighbour_sessions: np.ndarray, query_session: np.datetime64) -> np.ndarray:
    """Weekdays in [neighbour session, query session): the fallback when no calendar is given."""
    return np.busday_count(neighbour_sessions, query_session).astype(np.float64)


def session_ages_function(calendar: SessionAges | Sequence[dt.date] | np.ndarray | None) -> SessionAges:
    """Turn what `retrieve` accepts as a calendar into an age function.

    Pass a prepared `TradingSessionAges` when querying repeatedly: a raw date list is
    converted on every call.
    """
    if calendar is None:
        return business_day_ages
    if callable(calendar):
        return calendar
    return TradingSessionAges(calendar)


# -- the pieces of §8, each testable on its own ----------------------------------------------


def kernel_weights(similarities: np.ndarray, config: RetrievalConfig) -> np.ndarray:
    sims = np.asarray(similarities, dtype=np.float64)
    if config.kernel == "exp":
        return np.exp((sims - 1.0) / config.kernel_bandwidth)
    return np.maximum(sims, 0.0) ** config.kernel_power


def neighbour_weights(similarities: np.ndarray, ages: np.ndarray, config: RetrievalConfig) -> np.ndarray:
    return kernel_weights(similarities, config) * np.exp(-np.asarray(ages, dtype=np.float64) / config.tau_sessions)


def select_neighbours(similarities: np.ndarray, session_days: np.ndarray, query_day: int,
                      max_per_session: int, k: int) -> np.ndarray:
    """Positions of the kept candidates, most similar first.

    Candidates from the query's session or later are dropped, then each session keeps its
    `max_per_session` most similar, then the best `k` remain. Ties keep candidate order.
    """
    sims = np.asarray(similarities)
    days = np.asarray(session_days)
    order = np.argsort(-sims, kind="stable")
    order = order[days[order] < query_day]
    if order.size == 0:
        return order
    # Rank of each candidate within its session: group by session (stable, so still by similarity).
    ordered_days = days[order]
    grouped = np.argsort(ordered_days, kind="stable")
    grouped_days = ordered_days[grouped]
    positions = np.arange(grouped.size)
    starts = np.concatenate(([True], grouped_days[1:] != grouped_days[:-1]))
    rank = np.empty(grouped.size, dtype=np.int64)
    rank[grouped] = positions - np.maximum.accumulate(np.where(starts, positions, 0))
    return order[rank < max_per_session][:k]


@dataclass(frozen=True, eq=False)
class Posterior:
    probabilities: np.ndarray  # in OUTCOMES order, sums to 1
    concentrations: np.ndarray  # Dirichlet a_o
    effective_n: float
    p_break_interval: tuple[float, float]


def effective_sample_size(weights: np.ndarray) -> float:
    total = float(np.sum(weights))
    squares = float(np.sum(np.square(weights)))
    return total * total / squares if squares > 0 else 0.0


def dirichlet_posterior(weights: np.ndarray, outcome_codes: np.ndarray, base_rates: np.ndarray,
                        prior_strength: float, credible_level: float = 0.90) -> Posterior:
    """SPEC §8 posterior from neighbour weights and outcome codes (indices into OUTCOMES)."""
    weights = np.asarray(weights, dtype=np.float64)
    base = np.asarray(base_rates, dtype=np.float64)
    n_eff = effective_sample_size(weights)
    total = float(weights.sum())
    outcome_mass = np.bincount(np.asarray(outcome_codes, dtype=np.int64), weights=weights, minlength=len(OUTCOMES))
    data = outcome_mass * (n_eff / total) if total > 0 else np.zeros(len(OUTCOMES))
    concentrations = data + prior_strength * base
    concentration_total = float(concentrations.sum())
    if concentration_total <= 0:  # α = 0 and no weighted neighbour: nothing to update, nothing known
        return Posterior(base.copy(), concentrations, n_eff, (0.0, 1.0))
    probabilities = concentrations / concentration_total
    a = float(concentrations[0])
    b = concentration_total - a
    return Posterior(probabilities, concentrations, n_eff, beta_interval(a, b, credible_level))


def beta_interval(a: float, b: float, level: float) -> tuple[float, float]:
    """Equal-tailed credible interval of Beta(a, b); a or b = 0 is a point mass at 0 or 1."""
    if a <= 0:
        return 0.0, 0.0
    if b <= 0:
        return 1.0, 1.0
    tail = (1.0 - level) / 2.0
    low, high = betaincinv(a, b, np.array([tail, 1.0 - tail]))
    return float(low), float(high)


def hierarchical_base_rates(counts_coarse_to_fine: Sequence[np.ndarray], pseudo_counts: float) -> np.ndarray:
    """Outcome rates shrunk level by level: each level's counts plus `pseudo_counts` spread as its
    parent's rates; the coarsest level's parent is uniform. Strictly positive when m > 0.

    With m = 0 the finest non-empty level's raw rates come out (an empty level is its parent).
    """
    rates = np.full(len(OUTCOMES), 1.0 / len(OUTCOMES))
    for counts in counts_coarse_to_fine:
        counts = np.asarray(counts, dtype=np.float64)
        total = counts.sum() + pseudo_counts
        if total > 0:
            rates = (counts + pseudo_counts * rates) / total
    return rates


def similarity_quantiles(similarities: np.ndarray) -> tuple[float, float, float] | None:
    """(p10, median, p90) of the kept neighbours' similarities; None without neighbours."""
    if similarities.size == 0:
        return None
    low, median, high = np.quantile(np.asarray(similarities, dtype=np.float64), [0.1, 0.5, 0.9])
    return float(low), float(median), float(high)


# -- the result ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RetrievalResult:
    """The outcome distribution of one query and the neighbours it came from."""

    query_session: dt.date
    query_key: FineKey
    probabilities: dict[str, float]
    p_break_interval: tuple[float, float]
    credible_level: float
    effective_n: float
    mean_similarity: float | None  # unweighted, over the kept neighbours
    similarity_p10_median_p90: tuple[float, float, float] | None  # of the kept neighbours' similarities
    base_rates: dict[str, float]
    base_history: int  # labelled episodes before the query session in the partition used
    partition: PartitionChoice | None  # None: the index has no episode of the query's direction
    insufficient_history: bool
    neighbour_rows: np.ndarray  # rows of `metadata`, most similar first
    similarities: np.ndarray
    weights: np.ndarray
    ages: np.ndarray  # trading sessions between neighbour and query session
    metadata: pl.DataFrame = field(repr=False)  # the index's metadata (shared, not copied)

    @property
    def n_neighbours(self) -> int:
        return int(self.neighbour_rows.size)

    @cached_property
    def neighbours(self) -> pl.DataFrame:
        """One row per neighbour: id, session, similarity, weight, age, label, then every carried column.

        Built on first access, so a query that only needs the distribution never touches polars.
        """
        gathered = self.metadata[self.neighbour_rows]
        computed = [
            pl.Series("similarity", self.similarities, dtype=pl.Float64),
            pl.Series("weight", self.weights, dtype=pl.Float64),
            pl.Series("age_sessions", self.ages, dtype=pl.Float64),
        ]
        leading = ["episode_id", "session", *(s.name for s in computed), "label"]
        carried = [c for c in gathered.columns if c not in leading]
        return gathered.with_columns(computed).select(*leading, *carried)

    def to_dict(self) -> dict:
        """JSON-serializable (dates as ISO strings, NaN as None)."""
        return jsonable({
            "query_session": self.query_session,
            "query_key": list(self.query_key),
            "probabilities": self.probabilities,
            "p_break_interval": list(self.p_break_interval),
            "credible_level": self.credible_level,
            "effective_n": self.effective_n,
            "mean_similarity": self.mean_similarity,
            "similarity": None if self.similarity_p10_median_p90 is None else dict(
                zip(("p10", "median", "p90"), self.similarity_p10_median_p90)),
            "base_rates": self.base_rates,
            "base_history": self.base_history,
            "partition": None if self.partition is None else {
                "key": list(self.partition.key),
                "granularity": self.partition.granularity,
                "n_eligible": self.partition.n_eligible,
                "below_min_partition": self.partition.below_min_partition,
            },
            "insufficient_history": self.insufficient_history,
            "n_neighbours": self.n_neighbours,
            "neighbours": self.neighbours.to_dicts(),
        })


# -- retrieval ----------------------------------------------------------------------------


def retrieve(index: SimilarityIndex, query_vector: np.ndarray, query_session: dt.date, key: FineKey,
             config: RetrievalConfig | None = None, *,
             session_calendar: SessionAges | Sequence[dt.date] | np.ndarray | None = None) -> RetrievalResult:
    """Outcome distribution for an approach described by `query_vector` (robust-z, index dim).

    `key` is the approach's (level_kind, direction, time_bucket); only episodes from sessions
    strictly before `query_session` are used, for neighbours and base rates alike.
    `session_calendar` counts neighbour ages (see the module docstring; default business days).
    """
    config = config or RetrievalConfig()
    query = np.asarray(query_vector, dtype=np.float32).reshape(1, -1)
    if query.shape[1] != index.dim:
        raise ValueError(f"query has {query.shape[1]} dimensions, the index {index.dim}")
    if not np.isfinite(query).all():
        raise ValueError("query vector contains NaN or inf")
    query_day = int(to_day_numbers(query_session))
    choice = index.choose_partition(key, query_session)

    rows = np.empty(0, np.int64)
    sims = np.empty(0, np.float32)
    base = hierarchical_base_rates(base_counts_coarse_to_fine(index, key, query_session), config.base_pseudo_counts)
    if choice is None:
        base_counts = np.zeros(len(OUTCOMES), dtype=np.int64)
    else:
        base_counts = index.outcome_counts_before(choice.key, query_session)
        unit_query = l2_normalized(query)
        if choice.n_eligible > 0 and np.any(unit_query):
            rows, sims = index.search_partition(choice.key, unit_query, config.overfetch, choice.n_eligible)
            # Unlabelled episodes carry no outcome; they must not take a neighbour's place.
            labelled = index.outcome_codes[rows] >= 0
            rows, sims = rows[labelled], sims[labelled]
            kept = select_neighbours(sims, index.session_days[rows], query_day, config.max_per_session, config.k)
            rows, sims = rows[kept], sims[kept]

    query_date64 = np.datetime64(query_session, "D")
    ages_of = session_ages_function(session_calendar)
    ages = ages_of(index.session_days[rows].astype("datetime64[D]"), query_date64) if rows.size else np.empty(0)
    weights = neighbour_weights(sims, ages, config)
    posterior = dirichlet_posterior(weights, index.outcome_codes[rows], base, config.prior_strength,
                                    config.credible_level)
    return RetrievalResult(
        query_session=query_session,
        query_key=tuple(key),
        probabilities=dict(zip(OUTCOMES, posterior.probabilities.tolist())),
        p_break_interval=posterior.p_break_interval,
        credible_level=config.credible_level,
        effective_n=posterior.effective_n,
        mean_similarity=float(np.mean(sims)) if sims.size else None,
        similarity_p10_median_p90=similarity_quantiles(sims),
        base_rates=dict(zip(OUTCOMES, base.tolist())),
        base_history=int(base_counts.sum()),
        partition=choice,
        insufficient_history=posterior.effective_n < config.min_effective_n,
        neighbour_rows=rows,
        similarities=sims,
        weights=weights,
        ages=np.asarray(ages, dtype=np.float64),
        metadata=index.meta,
    )


def base_counts_coarse_to_fine(index: SimilarityIndex, key: FineKey, before_session: dt.date) -> list[np.ndarray]:
    """Labelled outcome counts before the session: all episodes, the key's direction, kind ×
    direction, kind × direction × bucket (a partition the index lacks counts zero)."""
    def counts(partition_key: tuple[str, ...]) -> np.ndarray:
        if not index.has_partition(partition_key):
            return np.zeros(len(OUTCOMES), dtype=np.int64)
        return index.outcome_counts_before(partition_key, before_session)

    every = sum((counts((direction,)) for direction in DIRECTIONS), np.zeros(len(OUTCOMES), dtype=np.int64))
    fine, kind_direction, direction = fallback_chain(key)
    return [every, counts(direction), counts(kind_direction), counts(fine)]


# -- live display -------------------------------------------------------------------------


class OutcomeSmoother:
    """EWMA of successive outcome distributions of the same approach (SPEC §8, live display).

    After `half_life_queries` further queries a past distribution's weight has halved. The
    first query of an approach is shown as is; `reset` when the approach ends so the next
    approach to that level starts fresh.
    """

    def __init__(self, half_life_queries: float) -> None:
        if half_life_queries <= 0:
            raise ValueError(f"half_life_queries must be > 0, got {half_life_queries}")
        self.half_life_queries = half_life_queries
        self._retain = 0.5 ** (1.0 / half_life_queries)
        self._state: dict[Hashable, np.ndarray] = {}

    def update(self, approach_key: Hashable, probabilities: Mapping[str, float]) -> dict[str, float]:
        latest = np.array([probabilities[o] for o in OUTCOMES], dtype=np.float64)
        previous = self._state.get(approach_key)
        smoothed = latest if previous is None else self._retain * previous + (1.0 - self._retain) * latest
        self._state[approach_key] = smoothed
        return dict(zip(OUTCOMES, smoothed.tolist()))

    def reset(self, approach_key: Hashable) -> None:
        self._state.pop(approach_key, None)

    def __contains__(self, approach_key: Hashable) -> bool:
        return approach_key in self._state
