"""Probabilistic metrics on hand-computed examples (numbers worked out in the comments)."""

import itertools
import math

import numpy as np
import pytest

from spymaster_assets.lib import metrics

# The running example: two BREAKs (y = 1) and two REJECTs.
Y = np.array([1, 0, 1, 0])
P = np.array([0.9, 0.2, 0.6, 0.5])


def test_brier_by_hand():
    # errors 0.1, 0.2, 0.4, 0.5 → squares 0.01 + 0.04 + 0.16 + 0.25 = 0.46 → / 4 = 0.115
    assert metrics.brier(Y, P) == pytest.approx(0.115)
    assert metrics.brier(Y, np.full(4, 0.5)) == pytest.approx(0.25)


def test_log_loss_by_hand_and_clipping():
    # −(ln 0.9 + ln 0.8 + ln 0.6 + ln 0.5) / 4 = (0.1053605 + 0.2231436 + 0.5108256 + 0.6931472) / 4 = 0.3831192
    assert metrics.log_loss(Y, P) == pytest.approx(0.3831192, abs=1e-7)
    # A certain miss is clipped at p = 1e-15: −ln(1e-15) = 34.5387764, finite.
    assert metrics.log_loss([1], [0.0]) == pytest.approx(34.5387764, abs=1e-6)
    # Mirror image: 1 − 1e-15 is not exact in float64 (1 − p ≈ 1.11e-15), hence the looser tolerance.
    assert metrics.log_loss([0], [1.0]) == pytest.approx(34.5387764, abs=1e-2)


def test_ece_and_reliability_table_by_hand():
    # Two bins [0, 0.5) and [0.5, 1]: bin 0 = {0.2 (y 0)}: gap 0.2, weight 1/4;
    # bin 1 = {0.9, 0.6, 0.5}: mean p 2.0/3, event rate 2/3, gap 0 → ECE = 0.2 / 4 = 0.05.
    assert metrics.ece(Y, P, n_bins=2) == pytest.approx(0.05)
    table = metrics.reliability_table(Y, P, n_bins=2)
    assert table.columns == ["bin", "p_mean", "y_rate", "count"]
    assert table["bin"].to_list() == [0, 1] and table["count"].to_list() == [1, 3]
    assert table["p_mean"].to_list() == pytest.approx([0.2, 2.0 / 3.0])
    assert table["y_rate"].to_list() == pytest.approx([0.0, 2.0 / 3.0])
    # Ten bins: every prediction alone in its bin → ECE = mean |p − y| = (0.1 + 0.2 + 0.4 + 0.5) / 4 = 0.3.
    assert metrics.ece(Y, P) == pytest.approx(0.3)


def test_probability_one_falls_in_the_last_bin_and_empty_bins_are_omitted():
    table = metrics.reliability_table([1, 1], [1.0, 0.95], n_bins=10)
    assert table["bin"].to_list() == [9] and table["count"].to_list() == [2]


def test_precision_at_threshold_with_coverage():
    # p ≥ 0.6 selects 0.9 (BREAK) and 0.6 (BREAK): precision 2/2, coverage 2/4.
    assert metrics.precision_at(Y, P, 0.6) == pytest.approx((1.0, 0.5))
    # p ≥ 0.5 adds 0.5 (REJECT): precision 2/3, coverage 3/4.
    assert metrics.precision_at(Y, P, 0.5) == pytest.approx((2.0 / 3.0, 0.75))
    precision, coverage = metrics.precision_at(Y, P, 0.95)
    assert math.isnan(precision) and coverage == 0.0


def _auc_by_pair_count(y, p) -> float:
    positives, negatives = p[y == 1], p[y == 0]
    score = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(positives, negatives))
    return score / (len(positives) * len(negatives))


def test_auc_is_the_share_of_concordant_pairs():
    y = np.array([1, 0, 1, 0, 1])
    p = np.array([0.8, 0.3, 0.3, 0.6, 0.9])
    # Pairs (BREAK p, REJECT p): (0.8,0.3)=1 (0.8,0.6)=1 (0.3,0.3)=½ (0.3,0.6)=0 (0.9,0.3)=1 (0.9,0.6)=1 → 4.5/6
    assert metrics.roc_auc(y, p) == pytest.approx(0.75)
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    p = np.round(rng.random(60), 1)  # rounded: plenty of ties
    assert metrics.roc_auc(y, p) == pytest.approx(_auc_by_pair_count(y, p))


def test_auc_with_one_class_is_nan_not_an_error():
    assert math.isnan(metrics.roc_auc([1, 1, 1], [0.2, 0.5, 0.9]))


def test_binary_report_against_the_base_rate():
    report = metrics.binary_report(Y, P, 0.5)
    assert report["brier"] == pytest.approx(0.115) and report["brier_base"] == pytest.approx(0.25)
    assert report["brier_skill"] == pytest.approx(1 - 0.115 / 0.25)  # 0.54
    assert report["log_loss_base"] == pytest.approx(math.log(2))
    assert report["log_loss_skill"] == pytest.approx(1 - 0.3831192 / math.log(2), abs=1e-6)
    assert report["precision_at"] == 1.0 and report["coverage_at"] == 0.5
    assert report["coverage_at_base"] == 0.0 and math.isnan(report["precision_at_base"])
    assert report["n"] == 4 and report["event_rate"] == 0.5
    # Per-episode base rates (pooled folds) are accepted and used element-wise.
    per_episode = metrics.binary_report(Y, P, np.array([0.5, 0.5, 0.6, 0.6]))
    # base errors 0.5, 0.5, 0.4, 0.6 → (0.25 + 0.25 + 0.16 + 0.36) / 4 = 0.255
    assert per_episode["brier_base"] == pytest.approx(0.255)


def test_a_worse_than_base_predictor_has_negative_skill():
    report = metrics.binary_report(Y, 1 - P, 0.5)
    assert report["brier_skill"] < 0 and report["auc"] == pytest.approx(0.0)


def test_multiclass_log_loss_and_brier_by_hand():
    y = np.array([0, 2])
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.3, 0.5]])
    # −(ln 0.7 + ln 0.5) / 2 = (0.3566749 + 0.6931472) / 2 = 0.5249111
    assert metrics.multiclass_log_loss(y, probs) == pytest.approx(0.5249111, abs=1e-7)
    # row 1: 0.3² + 0.2² + 0.1² = 0.14; row 2: 0.2² + 0.3² + 0.5² = 0.38 → mean 0.26
    assert metrics.multiclass_brier(y, probs) == pytest.approx(0.26)
    # With two classes the sum-over-classes Brier is exactly twice the binary Brier.
    two = np.column_stack([1 - P, P])
    assert metrics.multiclass_brier(Y, two) == pytest.approx(2 * metrics.brier(Y, P))
    report = metrics.multiclass_report(y, probs, [1 / 3, 1 / 3, 1 / 3])
    assert report["mc_log_loss_base"] == pytest.approx(math.log(3))
    # uniform base: each row (2/3)² + 2·(1/3)² = 6/9 → 0.6667
    assert report["mc_brier_base"] == pytest.approx(2 / 3)


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError):
        metrics.brier([1, 0], [0.5])


def test_reliability_png_is_written_headless(tmp_path):
    tables = {"raw": metrics.reliability_table(Y, P, 2), "flat": metrics.reliability_table(Y, np.full(4, 0.5), 2)}
    path = metrics.reliability_png(tables, tmp_path / "plots" / "reliability.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
