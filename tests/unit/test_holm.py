"""Holm's step-down adjustment and the bootstrap p-value of a cross-seed win rate."""

import numpy as np
import pytest

from orchestration.evaluation.stats import bootstrap_p_value, cross_seed_win_rate, holm_adjust


def test_holm_matches_hand_computed_values():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max
    adjusted = holm_adjust([0.01, 0.04, 0.03, 0.005])
    assert adjusted.tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_of_one_p_value_is_itself_and_caps_at_one():
    assert holm_adjust([0.2]).tolist() == [0.2]
    assert holm_adjust([0.6, 0.7]).tolist() == [1.0, 1.0]


def test_holm_rejects_bad_input():
    with pytest.raises(ValueError, match="p-values"):
        holm_adjust([0.1, 1.5])


def test_bootstrap_p_value_small_when_null_is_far_and_large_when_near():
    assert bootstrap_p_value(np.full(100, 0.7)) == pytest.approx(0.01)  # bounded by 1/samples
    assert bootstrap_p_value(np.linspace(0.4, 0.6, 101)) == pytest.approx(1.0)


def test_cross_seed_win_rate_reports_a_p_value():
    rng = np.random.default_rng(0)
    better = rng.normal(1, 1, (3, 60))
    worse = rng.normal(0, 1, (3, 60))
    clear = cross_seed_win_rate(better, worse, samples=400)
    tie = cross_seed_win_rate(worse, rng.normal(0, 1, (3, 60)), samples=400)
    assert clear["p_value"] < 0.01 < 0.05 < tie["p_value"]
