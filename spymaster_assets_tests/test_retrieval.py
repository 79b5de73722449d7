"""Similarity index and retrieval (SPEC §7 index, §8 outcome distribution) on hand-built data."""

import datetime as dt
import json
import math
from functools import lru_cache

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from spymaster_assets.lib.retrieval import (
    OutcomeSmoother,
    RetrievalConfig,
    TradingSessionAges,
    business_day_ages,
    dirichlet_posterior,
    retrieve,
    select_neighbours,
)
from spymaster_assets.lib.similarity_index import (
    DIRECTIONS,
    LEVEL_KINDS,
    OUTCOMES,
    TIME_BUCKETS,
    IndexConfig,
    SimilarityIndex,
    l2_normalized,
)

BREAK, REJECT, CHOP = 0, 1, 2  # positions in OUTCOMES
FINE = ("PM_HIGH", "UP", "T0_15")
DAY0 = dt.date(2024, 1, 1)


def make_meta(sessions, keys=None, labels=None, **extra) -> pl.DataFrame:
    n = len(sessions)
    keys = keys or [FINE] * n
    labels = labels if labels is not None else ["BREAK"] * n
    return pl.DataFrame({
        "episode_id": [f"e{i}" for i in range(n)],
        "session": list(sessions),
        "level_kind": [k[0] for k in keys],
        "direction": [k[1] for k in keys],
        "time_bucket": [k[2] for k in keys],
        "label": labels,
        **extra,
    }, schema_overrides={"session": pl.Date, "label": pl.Utf8})


def random_corpus(n: int, dim: int, n_sessions: int, seed: int, all_keys: bool = False):
    """Clustered vectors (so neighbours are meaningfully close) with random sessions and labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim))
    vectors = (centres[rng.integers(0, 20, n)] + 0.6 * rng.normal(size=(n, dim))).astype(np.float32)
    sessions = [DAY0 + dt.timedelta(days=int(i)) for i in rng.integers(0, n_sessions, n)]
    keys = None
    if all_keys:
        keys = list(zip(rng.choice(LEVEL_KINDS, n), rng.choice(DIRECTIONS, n), rng.choice(TIME_BUCKETS, n)))
    meta = make_meta(sessions, keys, list(rng.choice(OUTCOMES, n)), mfe_atr=rng.random(n))
    return vectors, meta


def brute_force_top(vectors: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit.astype(np.float64) @ (query / np.linalg.norm(query)).astype(np.float64)
    return np.argsort(-sims, kind="stable")[:k]


# -- the posterior, by hand ---------------------------------------------------------------


def test_posterior_matches_hand_computation():
    # w = (1, .5, .5), outcomes (B, B, R), base (.5, .3, .2), α = 4:
    # Σw = 2, Σw² = 1.5, n = 4/1.5 = 8/3, rescale n/Σw = 4/3
    # a_B = 1.5·4/3 + 4·.5 = 4;  a_R = .5·4/3 + 4·.3 = 28/15;  a_C = 0 + 4·.2 = .8;  Σa = 20/3
    # p = (4, 28/15, .8) / (20/3) = (.6, .28, .12);  p(BREAK) ~ Beta(4, 20/3 − 4 = 8/3)
    post = dirichlet_posterior(np.array([1.0, 0.5, 0.5]), np.array([BREAK, BREAK, REJECT]),
                               np.array([0.5, 0.3, 0.2]), prior_strength=4.0)
    assert post.effective_n == pytest.approx(8 / 3, rel=1e-12)
    np.testing.assert_allclose(post.concentrations, [4.0, 28 / 15, 0.8], rtol=1e-12)
    np.testing.assert_allclose(post.probabilities, [0.6, 0.28, 0.12], rtol=1e-12)
    low, high = stats.beta.ppf([0.05, 0.95], 4.0, 8 / 3)
    assert post.p_break_interval == pytest.approx((low, high), rel=1e-9)
    assert 0.25 < low < 0.6 < high < 0.9


def test_few_neighbours_shrink_to_base_rate_by_the_prior_weight():
    # One BREAK neighbour: n = 1, so p = (1·[o=B] + 4·base) / 5, i.e. the base rate moved 1/5 of
    # the way toward the data: B (1 + .8)/5 = .36, R 2/5 = .4, C 1.2/5 = .24.
    post = dirichlet_posterior(np.array([0.37]), np.array([BREAK]), np.array([0.2, 0.5, 0.3]), prior_strength=4.0)
    assert post.effective_n == pytest.approx(1.0)
    np.testing.assert_allclose(post.probabilities, [0.36, 0.40, 0.24], rtol=1e-12)


def test_no_prior_and_equal_weights_give_the_outcome_shares():
    codes = np.array([BREAK] * 20 + [REJECT] * 12 + [CHOP] * 8)
    post = dirichlet_posterior(np.full(40, 0.25), codes, np.array([0.1, 0.1, 0.8]), prior_strength=0.0)
    assert post.effective_n == pytest.approx(40.0)
    np.testing.assert_allclose(post.probabilities, [0.5, 0.3, 0.2], rtol=1e-12)
    assert post.p_break_interval == pytest.approx(tuple(stats.beta.ppf([0.05, 0.95], 20, 20)), rel=1e-9)


def test_degenerate_posteriors_never_produce_nan():
    no_break = dirichlet_posterior(np.ones(5), np.full(5, REJECT), np.array([0.0, 1.0, 0.0]), prior_strength=0.0)
    assert no_break.p_break_interval == (0.0, 0.0)
    nothing = dirichlet_posterior(np.empty(0), np.empty(0, int), np.array([0.2, 0.3, 0.5]), prior_strength=0.0)
    np.testing.assert_allclose(nothing.probabilities, [0.2, 0.3, 0.5])
    assert nothing.effective_n == 0.0 and nothing.p_break_interval == (0.0, 1.0)


def test_retrieve_end_to_end_by_hand():
    # 2-d vectors; query (1, 0). Power kernel p = 1 and τ = inf make weights = similarities.
    # Earlier sessions: e0 sim 1 BREAK, e1 sim .5 BREAK, e2 sim .5 REJECT. Same-day e3 and
    # next-day e4 are identical to the query (sim 1) but CHOP and must be invisible, also in
    # the base rates: base = (2/3, 1/3, 0).
    # n = 8/3 as above; a_B = 1.5·4/3 + 4·2/3 = 14/3, a_R = 2/3 + 4/3 = 2, a_C = 0; Σa = 20/3
    # p = (.7, .3, 0); p(BREAK) ~ Beta(14/3, 2).
    root = math.sqrt(0.75)
    vectors = np.array([[1, 0], [0.5, root], [0.5, -root], [1, 0], [1, 0]], dtype=np.float32) * 3
    query_day = DAY0 + dt.timedelta(days=10)
    sessions = [DAY0, DAY0 + dt.timedelta(days=1), DAY0 + dt.timedelta(days=2), query_day,
                query_day + dt.timedelta(days=1)]
    meta = make_meta(sessions, labels=["BREAK", "BREAK", "REJECT", "CHOP", "CHOP"], mfe_atr=[1.0, 2.0, 3.0, 4.0, 5.0])
    index = SimilarityIndex.build(vectors, meta, IndexConfig(min_partition=1))
    # Raw partition rates (no hierarchical shrinkage) keep the arithmetic by hand; the shrinkage
    # has its own tests below.
    config = RetrievalConfig(kernel="power", kernel_power=1.0, tau_sessions=math.inf, base_pseudo_counts=0.0)
    result = retrieve(index, np.array([2.0, 0.0]), query_day, FINE, config)

    assert result.neighbours["episode_id"].to_list() == ["e0", "e1", "e2"] or \
        result.neighbours["episode_id"].to_list() == ["e0", "e2", "e1"]
    np.testing.assert_allclose(result.weights, [1.0, 0.5, 0.5], atol=1e-6)
    assert result.base_rates == pytest.approx({"BREAK": 2 / 3, "REJECT": 1 / 3, "CHOP": 0.0})
    assert result.base_history == 3
    assert result.effective_n == pytest.approx(8 / 3, rel=1e-5)
    assert result.probabilities == pytest.approx({"BREAK": 0.7, "REJECT": 0.3, "CHOP": 0.0}, rel=1e-5, abs=1e-9)
    assert result.p_break_interval == pytest.approx(tuple(stats.beta.ppf([0.05, 0.95], 14 / 3, 2.0)), rel=1e-4)
    assert result.mean_similarity == pytest.approx(2 / 3, rel=1e-5)
    assert result.insufficient_history  # n = 8/3 < 10
    assert result.partition.granularity == "kind_direction_bucket"
    assert result.neighbours["mfe_atr"].to_list()[0] == 1.0  # extra columns carried through

    payload = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert payload["query_session"] == "2024-01-11"
    assert payload["neighbours"][0]["session"] == "2024-01-01"
    assert payload["n_neighbours"] == 3


def test_neighbour_weights_decay_with_trading_session_age():
    # Identical vectors, τ = 60: a neighbour 1 session old vs 61 sessions old weigh e^-1/60 : e^-61/60.
    sessions = [DAY0, DAY0 + dt.timedelta(days=60)]
    query_day = DAY0 + dt.timedelta(days=61)
    calendar = TradingSessionAges([DAY0 + dt.timedelta(days=i) for i in range(62)])  # every day a session
    index = SimilarityIndex.build(np.ones((2, 4), np.float32), make_meta(sessions), IndexConfig(min_partition=1))
    result = retrieve(index, np.ones(4), query_day, FINE, session_calendar=calendar)
    by_age = dict(zip(result.ages.tolist(), result.weights.tolist()))
    assert set(by_age) == {1.0, 61.0}
    assert by_age[61.0] / by_age[1.0] == pytest.approx(math.exp(-1.0), rel=1e-6)


def test_session_age_counting():
    friday, monday = np.datetime64("2024-07-05"), np.datetime64("2024-07-08")
    assert business_day_ages(np.array([friday]), monday).tolist() == [1.0]
    # July 4 is not a session: Jul 3 → Jul 5 is one session apart on the exchange calendar.
    calendar = TradingSessionAges([dt.date(2024, 7, 2), dt.date(2024, 7, 3), dt.date(2024, 7, 5), dt.date(2024, 7, 8)])
    ages = calendar(np.array(["2024-07-02", "2024-07-03", "2024-07-05"], dtype="datetime64[D]"), monday)
    assert ages.tolist() == [3.0, 2.0, 1.0]


# -- FAISS search against brute force ------------------------------------------------------


def test_flat_search_equals_brute_force_cosine():
    vectors, meta = random_corpus(2000, 32, 50, seed=1)
    index = SimilarityIndex.build(vectors, meta)
    assert set(index.partition_kinds().values()) == {"flat"}
    queries = np.random.default_rng(2).normal(size=(20, 32)).astype(np.float32)
    for query in queries:
        rows, sims = index.search_partition(FINE, l2_normalized(query), 50)
        expected = brute_force_top(vectors, query, 50)
        np.testing.assert_array_equal(rows, expected)
        unit = vectors[expected] / np.linalg.norm(vectors[expected], axis=1, keepdims=True)
        np.testing.assert_allclose(sims, unit @ (query / np.linalg.norm(query)), atol=1e-5)


def test_hnsw_recall_at_10():
    vectors, meta = random_corpus(3000, 32, 50, seed=3)
    index = SimilarityIndex.build(vectors, meta, IndexConfig(hnsw_threshold=1000))
    assert set(index.partition_kinds().values()) == {"hnsw"}
    queries = vectors[np.random.default_rng(4).integers(0, 3000, 50)] + 0.3
    hits = []
    for query in queries:
        rows, _ = index.search_partition(FINE, l2_normalized(query), 10)
        hits.append(len(set(rows.tolist()) & set(brute_force_top(vectors, query, 10).tolist())))
    assert sum(hits) / (10 * len(queries)) >= 0.95


# -- partitions ---------------------------------------------------------------------------


def test_partition_fallbacks():
    # min_partition 5. UP: PM_HIGH/T0_15 ×6 (fine), PM_HIGH/T15_30 ×2 (PM_HIGH UP has 8 → kind×direction),
    # OR_LOW/T0_15 ×1 (OR_LOW UP has 1 → direction UP, 9 ≥ 5). DOWN: 3 in total → direction, flagged.
    keys = [FINE] * 6 + [("PM_HIGH", "UP", "T15_30")] * 2 + [("OR_LOW", "UP", "T0_15")] + \
        [("PM_LOW", "DOWN", "T0_15")] * 3
    sessions = [DAY0 + dt.timedelta(days=i) for i in range(len(keys))]
    index = SimilarityIndex.build(np.eye(len(keys), 8, dtype=np.float32) + 0.1, make_meta(sessions, keys),
                                  IndexConfig(min_partition=5))
    assert len(index.partition_sizes()) == 4 + 3 + 2
    choose = index.choose_partition
    assert (choose(FINE).key, choose(FINE).granularity) == (FINE, "kind_direction_bucket")
    assert choose(("PM_HIGH", "UP", "T15_30")).key == ("PM_HIGH", "UP")
    assert choose(("OR_LOW", "UP", "T0_15")).key == ("UP",)
    assert choose(("SMA_90", "UP", "T60_120")).key == ("UP",)  # no episode of that kind at all
    down = choose(("PM_LOW", "DOWN", "T0_15"))
    assert (down.key, down.n_eligible, down.below_min_partition) == (("DOWN",), 3, True)
    assert not choose(FINE).below_min_partition

    # Counting only earlier sessions: before day 4 the fine partition holds 4 < 5 episodes, and
    # PM_HIGH UP too (T15_30 starts on day 6), so the query falls back to UP (4 episodes, flagged).
    early = choose(FINE, before_session=DAY0 + dt.timedelta(days=4))
    assert (early.key, early.n_eligible, early.below_min_partition) == (("UP",), 4, True)
    at_threshold = choose(FINE, before_session=DAY0 + dt.timedelta(days=5))  # exactly min_partition: enough
    assert (at_threshold.key, at_threshold.n_eligible) == (FINE, 5)

    hits = index.search(np.ones(8), ("PM_LOW", "DOWN", "T0_15"), k=10)
    assert hits.partition.key == ("DOWN",) and sorted(hits.rows.tolist()) == [9, 10, 11]

    result = retrieve(index, np.ones(8), DAY0 + dt.timedelta(days=20), ("PM_LOW", "DOWN", "T0_15"),
                      RetrievalConfig(prior_strength=4.0))
    assert result.partition.below_min_partition and result.n_neighbours == 3


def test_no_history_gives_uniform_distribution():
    index = SimilarityIndex.build(np.ones((3, 4), np.float32), make_meta([DAY0] * 3), IndexConfig(min_partition=1))
    empty_direction = retrieve(index, np.ones(4), DAY0 + dt.timedelta(days=5), ("PM_LOW", "DOWN", "T0_15"))
    assert empty_direction.partition is None
    before_everything = retrieve(index, np.ones(4), DAY0, FINE)
    # No history at all: uniform. No history of the query's direction: the global rates, i.e. three
    # UP BREAKs shrunk toward uniform with m = 10 pseudo-counts: (3 + 10/3, 10/3, 10/3) / 13.
    expected = ({"BREAK": 19 / 39, "REJECT": 10 / 39, "CHOP": 10 / 39}, dict.fromkeys(OUTCOMES, 1 / 3))
    for result, probabilities in zip((empty_direction, before_everything), expected):
        assert result.n_neighbours == 0 and result.insufficient_history and result.effective_n == 0.0
        assert result.probabilities == pytest.approx(probabilities)
        assert result.mean_similarity is None and result.similarity_p10_median_p90 is None
        json.dumps(result.to_dict(), allow_nan=False)


def test_zero_norm_rows_and_queries():
    vectors = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [-1, 0, 0, 0]], dtype=np.float32)
    meta = make_meta([DAY0, DAY0 + dt.timedelta(days=1), DAY0 + dt.timedelta(days=2)],
                     labels=["CHOP", "BREAK", "REJECT"])
    index = SimilarityIndex.build(vectors, meta, IndexConfig(min_partition=1))
    rows, sims = index.search_partition(FINE, l2_normalized(np.array([1, 0, 0, 0])), 3)
    assert rows.tolist() == [1, 0, 2] and sims.tolist() == [1.0, 0.0, -1.0]  # the zero row: exactly 0
    zero = retrieve(index, np.zeros(4), DAY0 + dt.timedelta(days=9), FINE)
    assert zero.n_neighbours == 0 and zero.insufficient_history
    assert zero.probabilities == pytest.approx(dict.fromkeys(OUTCOMES, 1 / 3))  # base rate of B, R, C


def test_unlabelled_episodes_are_not_neighbours_nor_base_rate():
    meta = make_meta([DAY0, DAY0 + dt.timedelta(days=1)], labels=["BREAK", None])
    index = SimilarityIndex.build(np.ones((2, 4), np.float32), meta, IndexConfig(min_partition=1))
    result = retrieve(index, np.ones(4), DAY0 + dt.timedelta(days=3), FINE, RetrievalConfig(base_pseudo_counts=0.0))
    assert result.neighbours["episode_id"].to_list() == ["e0"]
    assert result.base_rates == {"BREAK": 1.0, "REJECT": 0.0, "CHOP": 0.0} and result.base_history == 1


# -- drop rules ---------------------------------------------------------------------------


def test_select_neighbours_rules_by_hand():
    sims = np.array([0.9, 0.8, 0.95, 0.7, 0.85, 0.6, 0.99])
    days = np.array([1, 1, 1, 2, 2, 5, 9])  # query day 5: days 5 and 9 are dropped
    assert select_neighbours(sims, days, 5, max_per_session=2, k=50).tolist() == [2, 0, 4, 3]
    assert select_neighbours(sims, days, 5, max_per_session=1, k=50).tolist() == [2, 4]
    assert select_neighbours(sims, days, 5, max_per_session=2, k=3).tolist() == [2, 0, 4]


def test_drop_rules_against_a_plain_reimplementation():
    vectors, meta = random_corpus(450, 16, 40, seed=5)  # < 500 eligible: the over-fetch sees them all
    index = SimilarityIndex.build(vectors, meta)
    sessions = np.array(meta["session"].to_list())
    query_day = DAY0 + dt.timedelta(days=30)
    for query in np.random.default_rng(6).normal(size=(10, 16)):
        result = retrieve(index, query, query_day, FINE)
        expected, per_session = [], {}
        for row in brute_force_top(vectors, query, len(vectors)):
            if sessions[row] >= query_day or per_session.get(sessions[row], 0) == 2:
                continue
            per_session[sessions[row]] = per_session.get(sessions[row], 0) + 1
            expected.append(int(row))
        assert result.neighbour_rows.tolist() == expected[:50]
        assert result.n_neighbours == 50


# -- determinism and persistence -------------------------------------------------------------


def _answers(index, queries, days):
    return [retrieve(index, q, d, FINE).to_dict() for q, d in zip(queries, days)]


def test_deterministic_and_save_load_round_trip(tmp_path):
    vectors, meta = random_corpus(1500, 24, 60, seed=7, all_keys=True)
    config = IndexConfig(hnsw_threshold=500)  # direction partitions (~750) are HNSW, the others flat
    first, second = SimilarityIndex.build(vectors, meta, config), SimilarityIndex.build(vectors, meta, config)
    assert "hnsw" in first.partition_kinds().values() and "flat" in first.partition_kinds().values()
    rng = np.random.default_rng(8)
    queries = rng.normal(size=(10, 24))
    days = [DAY0 + dt.timedelta(days=int(d)) for d in rng.integers(1, 70, 10)]
    hnsw_hits = [first.search_partition(("UP",), l2_normalized(q), 100)[0] for q in queries]
    expected = _answers(first, queries, days)
    assert _answers(first, queries, days) == expected
    assert _answers(second, queries, days) == expected
    for query, hits in zip(queries, hnsw_hits):  # an HNSW partition on its own, not only via retrieve
        np.testing.assert_array_equal(second.search_partition(("UP",), l2_normalized(query), 100)[0], hits)

    target = tmp_path / "index"
    first.save(target)
    second.save(target)  # replaces the existing directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # no staging leftovers
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["dim"] == 24 and manifest["min_partition"] == 50 and manifest["hnsw_threshold"] == 500
    assert sum(p["size"] for p in manifest["partitions"] if p["granularity"] == "direction") == 1500
    loaded = SimilarityIndex.load(target)
    assert _answers(loaded, queries, days) == expected
    assert loaded.partition_kinds() == first.partition_kinds()
    for query, hits in zip(queries, hnsw_hits):
        np.testing.assert_array_equal(loaded.search_partition(("UP",), l2_normalized(query), 100)[0], hits)


def test_invalid_inputs_are_rejected():
    meta = make_meta([DAY0, DAY0])
    with pytest.raises(ValueError, match="NaN"):
        SimilarityIndex.build(np.array([[np.nan, 1.0], [1.0, 1.0]], np.float32), meta)
    with pytest.raises(ValueError, match="unknown values"):
        SimilarityIndex.build(np.ones((2, 2), np.float32), meta.with_columns(direction=pl.lit("SIDEWAYS")))
    index = SimilarityIndex.build(np.ones((2, 2), np.float32), meta)
    with pytest.raises(ValueError, match="dimensions"):
        retrieve(index, np.ones(3), DAY0, FINE)


# -- property test ------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _property_index() -> SimilarityIndex:
    vectors, meta = random_corpus(3000, 16, 120, seed=9, all_keys=True)
    return SimilarityIndex.build(vectors, meta)


@settings(max_examples=60, deadline=None)
@given(
    day=st.integers(min_value=-5, max_value=130),
    key=st.tuples(st.sampled_from(LEVEL_KINDS), st.sampled_from(DIRECTIONS), st.sampled_from(TIME_BUCKETS)),
    query=st.lists(st.floats(-4, 4, allow_nan=False, width=32), min_size=16, max_size=16),
    prior=st.sampled_from([0.0, 4.0]),
    kernel=st.sampled_from(["exp", "power"]),
)
def test_retrieval_invariants(day, key, query, prior, kernel):
    index = _property_index()
    query_day = DAY0 + dt.timedelta(days=day)
    result = retrieve(index, np.array(query), query_day, key, RetrievalConfig(prior_strength=prior, kernel=kernel))
    neighbours = result.neighbours
    assert neighbours.height == result.n_neighbours <= 50
    assert (neighbours["session"] < query_day).all()
    assert neighbours.group_by("session").len()["len"].max() in (None, 1, 2)
    assert (result.weights >= 0).all() and np.isfinite(result.weights).all()
    assert sum(result.probabilities.values()) == pytest.approx(1.0)
    assert all(0.0 <= p <= 1.0 for p in result.probabilities.values())
    low, high = result.p_break_interval
    assert 0.0 <= low <= high <= 1.0
    assert result.insufficient_history == (result.effective_n < 10)
    assert result.effective_n <= result.n_neighbours + 1e-9
    json.dumps(result.to_dict(), allow_nan=False)


# -- live smoothing -----------------------------------------------------------------------


def test_outcome_smoother_half_life_and_reset():
    smoother = OutcomeSmoother(half_life_queries=1)
    first = {"BREAK": 1.0, "REJECT": 0.0, "CHOP": 0.0}
    second = {"BREAK": 0.0, "REJECT": 1.0, "CHOP": 0.0}
    assert smoother.update("PM_HIGH/UP", first) == first
    assert smoother.update("PM_HIGH/UP", second) == pytest.approx({"BREAK": 0.5, "REJECT": 0.5, "CHOP": 0.0})
    assert smoother.update("OR_LOW/DOWN", second) == second  # approaches are independent
    smoother.reset("PM_HIGH/UP")
    assert "PM_HIGH/UP" not in smoother
    assert smoother.update("PM_HIGH/UP", second) == second
    slow = OutcomeSmoother(half_life_queries=2)
    slow.update("a", first)
    assert slow.update("a", second)["BREAK"] == pytest.approx(2 ** -0.5)  # half-life 2: √½ retained per query


# -- never degenerate: hierarchical base rates ---------------------------------------------


def test_hierarchical_base_rates_by_hand():
    from spymaster_assets.lib.retrieval import hierarchical_base_rates

    # m = 2. global (4, 4, 2) over uniform: (4 + 2/3, 4 + 2/3, 2 + 2/3) / 12 = (7/18, 7/18, 4/18).
    # direction (0, 2, 0): (0 + 2·7/18, 2 + 2·7/18, 0 + 2·4/18) / 4 = (7/36, 25/36, 4/36).
    # empty kind × direction: unchanged. fine (0, 1, 0): (2·7/36, 1 + 2·25/36, 2·4/36) / 3 = (14, 86, 8) / 108.
    counts = [np.array([4, 4, 2]), np.array([0, 2, 0]), np.zeros(3), np.array([0, 1, 0])]
    np.testing.assert_allclose(hierarchical_base_rates(counts, 2.0), np.array([14, 86, 8]) / 108)
    # m = 0: the finest non-empty level's raw rates; nothing at all: uniform.
    np.testing.assert_allclose(hierarchical_base_rates(counts, 0.0), [0, 1, 0])
    np.testing.assert_allclose(hierarchical_base_rates([np.zeros(3)] * 4, 0.0), [1 / 3] * 3)


def test_a_partition_without_any_break_never_answers_zero_with_a_zero_width_interval():
    # The query's fine partition (PM_HIGH/UP/T0_15) holds 60 REJECTs and nothing else; other
    # partitions of the same direction hold BREAKs. Neighbours all come from the fine partition.
    rng = np.random.default_rng(5)
    n_fine, n_other = 60, 40
    sessions = [DAY0 + dt.timedelta(days=int(i)) for i in rng.integers(0, 30, n_fine + n_other)]
    keys = [FINE] * n_fine + [("OR_LOW", "UP", "T60_120")] * n_other
    labels = ["REJECT"] * n_fine + ["BREAK"] * n_other
    index = SimilarityIndex.build(rng.normal(size=(n_fine + n_other, 6)).astype(np.float32), make_meta(sessions, keys, labels))
    result = retrieve(index, rng.normal(size=6), DAY0 + dt.timedelta(days=40), FINE)
    assert result.partition.key == FINE and set(result.neighbours["label"].to_list()) == {"REJECT"}
    low, high = result.p_break_interval
    assert 0.0 < low < result.probabilities["BREAK"] < high < 1.0
    assert 0.0 < result.base_rates["BREAK"] < 0.5  # the fine partition's own 0 % pulled toward its parents' 40 %
    raw = retrieve(index, rng.normal(size=6), DAY0 + dt.timedelta(days=40), FINE, RetrievalConfig(base_pseudo_counts=0.0))
    assert raw.probabilities["BREAK"] == 0.0 and raw.p_break_interval == (0.0, 0.0)  # the defect the shrinkage removes


def test_neighbour_similarity_quantiles_are_reported():
    from spymaster_assets.lib.retrieval import similarity_quantiles

    assert similarity_quantiles(np.array([0.0, 0.25, 0.5, 0.75, 1.0])) == pytest.approx((0.1, 0.5, 0.9))
    assert similarity_quantiles(np.empty(0)) is None
    vectors, meta = random_corpus(400, 8, 30, seed=2)
    index = SimilarityIndex.build(vectors, meta, IndexConfig(min_partition=1))
    result = retrieve(index, vectors[0], DAY0 + dt.timedelta(days=40), FINE)
    p10, median, p90 = result.similarity_p10_median_p90
    sims = np.sort(result.similarities)
    assert (p10, median, p90) == pytest.approx(tuple(np.quantile(sims, [0.1, 0.5, 0.9])))
    assert result.to_dict()["similarity"] == pytest.approx({"p10": p10, "median": median, "p90": p90})
