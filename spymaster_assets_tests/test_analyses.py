"""Analyses: intervals, multiple-testing control and interaction tests on hand-checkable data."""

import numpy as np
import polars as pl
import pytest

from spymaster_assets.lib.analyses import (
    CONDITIONAL,
    UNCONDITIONAL,
    benjamini_hochberg,
    interaction_test,
    score,
    scored_by_segment,
    segment_base_rates,
    wilson_interval,
)


def test_wilson_interval_by_hand():
    # 8 of 10, z = 1.6449: centre (0.8 + z²/20)/(1 + z²/10) = 0.73612, half-width 0.19533
    low, high = wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.54079, abs=1e-4), pytest.approx(0.93145, abs=1e-4))
    assert np.isnan(wilson_interval(0, 0)[0])


def test_benjamini_hochberg_by_hand():
    # sorted 0.01, 0.03, 0.04, 0.20 → ×4/rank = 0.04, 0.06, 0.0533, 0.20 → running min from the top
    adjusted = benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.20]))
    np.testing.assert_allclose(adjusted, [0.04, 0.16 / 3, 0.16 / 3, 0.20])


def test_interaction_found_only_when_planted():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=4000), rng.normal(size=4000)
    planted = (rng.random(4000) < 1 / (1 + np.exp(-1.5 * a * b))).astype(float)
    additive = (rng.random(4000) < 1 / (1 + np.exp(-(a + b)))).astype(float)
    assert interaction_test(a, b, planted)["p_value"] < 1e-6
    assert interaction_test(a, b, additive)["p_value"] > 0.01


def test_segment_base_rates_shares_and_test():
    episodes = pl.DataFrame({"direction": ["UP"] * 10 + ["DOWN"] * 10,
                             "label": ["BREAK"] * 8 + ["REJECT"] * 2 + ["BREAK"] * 2 + ["CHOP"] * 8})
    rows = {r["direction"]: r for r in segment_base_rates(episodes, ("direction",))}
    assert rows["UP"]["break_share"] == 0.8 and rows["DOWN"]["chop_share"] == 0.8
    assert rows["UP"]["break_share_90ci"][0] == pytest.approx(0.54079, abs=1e-4)
    # exact two-sided binomial, 8 of 10 vs the pooled 0.5: 2·(C(10,8)+C(10,9)+C(10,10))/2¹⁰ = 112/1024
    assert rows["UP"]["p_value_vs_pooled"] == pytest.approx(112 / 1024)


def hand_predictions() -> pl.DataFrame:
    """Six held-out episodes: the binary model ranks the decisive ones perfectly, but says BREAK on the CHOPs."""
    return pl.DataFrame({
        "level_kind": ["OR_HIGH"] * 6,
        "label": ["BREAK", "REJECT", "CHOP", "BREAK", "REJECT", "CHOP"],
        "p_break_decisive": [0.9, 0.2, 0.95, 0.8, 0.3, 0.9],
        "base_break_decisive": [0.5] * 6,
        "p_break": [0.6, 0.1, 0.1, 0.5, 0.2, 0.1],
        "base_break": [0.3] * 6,
    })


def test_conditional_predictions_are_scored_on_decisive_episodes_only():
    predictions = hand_predictions()
    conditional = score(predictions, CONDITIONAL)
    assert conditional["n"] == 4 and conditional["auc"] == 1.0
    assert conditional["brier"] == pytest.approx((0.1**2 + 0.2**2 + 0.2**2 + 0.3**2) / 4)
    assert conditional["brier_base"] == pytest.approx(0.25)
    # The mismatch this replaces: p(BREAK | decisive) against BREAK-vs-everything, CHOP a miss.
    from spymaster_assets.lib.metrics import roc_auc

    wrong = roc_auc((predictions["label"] == "BREAK").to_numpy(), predictions["p_break_decisive"].to_numpy())
    assert wrong == pytest.approx(4.5 / 8)
    unconditional = score(predictions, UNCONDITIONAL)
    assert unconditional["n"] == 6 and unconditional["auc"] == 1.0
    assert unconditional["brier"] == pytest.approx((0.4**2 + 0.1**2 + 0.1**2 + 0.5**2 + 0.2**2 + 0.1**2) / 6)
    by_kind = scored_by_segment(predictions, "level_kind", CONDITIONAL, min_n=4)
    assert by_kind["OR_HIGH"]["n"] == 4 and by_kind["OR_HIGH"]["auc"] == 1.0
    assert scored_by_segment(predictions, "level_kind", CONDITIONAL, min_n=5)["OR_HIGH"] == {
        "n": 4, "note": "fewer than 5 held-out episodes"}
