"""The learned similarity metric (SPEC §7): weights that make neighbours alike in what decides the outcome."""

import numpy as np
import polars as pl
import pytest
from scipy.special import expit

from spymaster_assets.lib.similarity_metric import (
    IDENTITY,
    ATTRIBUTION,
    LEARNED,
    MetricConfig,
    SimilarityMetric,
    fit_logistic_l2,
    fit_metric,
)

DIMS = [f"d{i}" for i in range(8)]


def planted(n: int, seed: int = 0, n_dims: int = len(DIMS)):
    """Dimension 0 decides BREAK vs REJECT (logit 2·x0); the others (seven by default) are noise; 10 % CHOP."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, n_dims))
    breaks = rng.random(n) < expit(2.0 * z[:, 0])
    labels = np.where(rng.random(n) < 0.1, "CHOP", np.where(breaks, "BREAK", "REJECT"))
    return z, labels


def test_logistic_fit_is_at_the_penalized_optimum():
    z, labels = planted(500)
    decided = labels != "CHOP"
    y = (labels[decided] == "BREAK").astype(float)
    beta, intercept = fit_logistic_l2(z[decided], y, penalty=5.0)
    # Stationarity of Σ log loss + ½·5·‖β‖²: X'(σ(Xβ + b) − y) + 5β = 0 and Σ(σ − y) = 0.
    residual = expit(z[decided] @ beta + intercept) - y
    np.testing.assert_allclose(z[decided].T @ residual + 5.0 * beta, 0.0, atol=1e-4)
    assert abs(residual.sum()) < 1e-3
    assert beta[0] > 1.0 > np.abs(beta[1:]).max() * 4  # the planted dimension, shrunk by the penalty


def test_the_deciding_dimension_gets_the_weight_and_noise_little():
    z, labels = planted(2000)
    metric = fit_metric(z, labels, DIMS)
    assert metric.method == LEARNED and metric.n_fit == int((labels != "CHOP").sum())
    assert metric.weights[0] == 1.0 and metric.weights[1:].max() < 0.15
    assert metric.coefficients[0] > 0
    # A query that is mildly BREAK-ish on the deciding dimension and extreme on three noise ones:
    # plain cosine finds setups alike in the noise, the metric finds setups alike in x0.
    query = np.array([1.0, 2.5, -2.5, 2.5, 0, 0, 0, 0])

    def neighbours_x0(space: np.ndarray, q: np.ndarray) -> np.ndarray:
        unit = space / np.linalg.norm(space, axis=1, keepdims=True)
        return z[np.argsort(-(unit @ (q / np.linalg.norm(q))))[:50], 0]

    learned = neighbours_x0(metric.transform(z).astype(float), metric.transform(query).astype(float))
    plain = neighbours_x0(z, query)
    assert np.median(learned) > 0.75 and np.median(plain) < 0.5  # measured 1.47 vs 0.13


def test_too_little_history_or_one_outcome_gives_plain_cosine():
    z, labels = planted(60)
    assert fit_metric(z, labels, DIMS).method == IDENTITY  # fewer than 100 decided episodes
    one_outcome = fit_metric(*planted(500)[:1], np.full(500, "REJECT"), DIMS)
    assert one_outcome.method == IDENTITY and np.all(one_outcome.weights == 1.0)
    with pytest.raises(ValueError, match="NaN"):
        fit_metric(np.full((200, 8), np.nan), np.full(200, "BREAK"), DIMS)
    with pytest.raises(ValueError, match="do not match"):
        fit_metric(np.zeros((10, 3)), np.full(10, "BREAK"), DIMS)
    with pytest.raises(ValueError):
        MetricConfig(l2_penalty=0.0)


def test_stored_frame_round_trip_and_dimension_checks():
    z, labels = planted(1000)
    metric = fit_metric(z, labels, DIMS)
    frame = pl.concat([metric.frame("T2"), SimilarityMetric.identity(DIMS[:3]).frame("T0")])
    back = SimilarityMetric.from_frame(frame, "T2", list(reversed(DIMS)))  # any order: matched by name
    np.testing.assert_array_equal(back.weights, metric.weights[::-1])
    assert back.method == LEARNED and back.n_fit == metric.n_fit
    assert SimilarityMetric.from_frame(frame, "T0", DIMS[:3]).method == IDENTITY
    with pytest.raises(KeyError):
        SimilarityMetric.from_frame(frame, "T3", DIMS)
    with pytest.raises(ValueError, match="do not match"):
        SimilarityMetric.from_frame(frame, "T2", DIMS[:5])
    with pytest.raises(ValueError):
        metric.transform(np.zeros((2, 5)))
    assert metric.transform(z[:3]).dtype == np.float32


def test_the_blend_is_chosen_on_the_windows_newest_sessions():
    from spymaster_assets.lib.similarity_metric import blended_weights, choose_blend

    # One deciding dimension among 39 noise ones: plain cosine drowns it, the attributions find it.
    # (Among 7 noise dimensions plain cosine finds it too: it adds nothing clear, and the
    # incumbent — the tree attributions — serves.)
    dims = [f"d{i}" for i in range(40)]
    z, labels = planted(2000, seed=3, n_dims=len(dims))
    sessions = np.repeat(np.arange(40), 50)
    method, blend, auc, plain = choose_blend(z, labels, sessions, MetricConfig())
    assert method in (LEARNED, ATTRIBUTION)
    assert blend > 0 and auc > plain + 0.03
    assert choose_blend(*planted(2000, seed=3), sessions, MetricConfig())[:2] == (ATTRIBUTION, 1.0)
    metric = fit_metric(z, labels, dims, sessions=sessions)
    assert metric.method == method and metric.blend == blend and metric.holdout_auc == auc
    np.testing.assert_allclose(metric.weights, blended_weights(metric.coefficients, blend))
    assert np.argmax(metric.weights) == 0  # the deciding dimension weighs most, whichever source won
    # Outcomes unrelated to the vectors: nothing displaces the incumbent by noise.
    noise = np.random.default_rng(9).choice(["BREAK", "REJECT"], size=2000)
    unrelated = fit_metric(z, noise, dims, sessions=sessions)
    assert (unrelated.method, unrelated.blend) == (ATTRIBUTION, 1.0)
    assert unrelated.holdout_auc_plain is not None
    np.testing.assert_allclose(blended_weights(np.array([2.0, -1.0, 0.0]), 0.5), [1.0, 0.75, 0.5])


def test_random_labels_never_displace_the_incumbent_by_noise():
    """Outcomes unrelated to the vectors, windows shaped like the planted market's (40 sessions,
    ~270 held-out decided episodes): six contenders against the incumbent. Under a fixed 0.005
    margin the best of six beat the baseline by noise in 9 of these 12 windows; the paired-gain
    bound (family-wise α = 5 % per window) keeps the incumbent in all but at most one."""
    from spymaster_assets.lib.similarity_metric import INCUMBENT, choose_blend

    kept = 0
    for seed in range(100, 112):
        rng = np.random.default_rng(seed)
        z = rng.normal(size=(1200, 40))
        labels = rng.choice(["BREAK", "REJECT", "CHOP"], size=1200, p=[0.45, 0.45, 0.1])
        method, blend, auc, plain = choose_blend(z, labels, np.repeat(np.arange(40), 30), MetricConfig())
        kept += (method, blend) == INCUMBENT
    assert kept >= 11


def test_a_clearly_better_contender_displaces_the_incumbent():
    """Outcomes decided by the *sum* of all 40 dimensions: every dimension matters equally, the
    tree's attributions concentrate on a few, and plain cosine (or an even blend) wins clearly."""
    from spymaster_assets.lib.similarity_metric import INCUMBENT, choose_blend

    rng = np.random.default_rng(21)
    z = rng.normal(size=(2000, 40))
    breaks = rng.random(2000) < expit(1.5 * z.sum(axis=1) / np.sqrt(40))
    labels = np.where(breaks, "BREAK", "REJECT")
    method, blend, auc, plain = choose_blend(z, labels, np.repeat(np.arange(40), 50), MetricConfig())
    assert (method, blend) != INCUMBENT and auc is not None


def test_paired_gain_standard_error_by_hand():
    from spymaster_assets.lib.similarity_metric import paired_gain_standard_error

    y = np.array([0, 1, 0, 1, 0, 1, 0, 1], dtype=float)
    groups = np.repeat([0, 1, 2, 3], 2)
    # the same score twice: the gain is 0 in every leave-one-out, SE 0
    score = np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.4, 0.6])
    assert paired_gain_standard_error(y, score, score, groups) == 0.0
    # a score that is perfect against one that is perfect except in group 0 (there inverted):
    # leaving group 0 out gives gain 0; leaving any other out leaves group 0's pair: gain 1 − AUC_b
    worse = score.copy()
    worse[:2] = [0.9, 0.1]
    from spymaster_assets.lib.metrics import roc_auc

    gains = [0.0] + [1.0 - roc_auc(y[groups != g], worse[groups != g]) for g in (1, 2, 3)]
    expected = np.sqrt(3 / 4 * np.sum((np.array(gains) - np.mean(gains)) ** 2))
    assert paired_gain_standard_error(y, score, worse, groups) == pytest.approx(expected)
    assert paired_gain_standard_error(y, score, worse, np.zeros(8)) == float("inf")  # one group: no SE
