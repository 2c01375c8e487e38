"""Win-rate statistics of the evaluation (orchestration/evaluation/stats.py), by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestration.evaluation.stats import (
    bootstrap_interval,
    cross_seed_outcomes,
    cross_seed_win_rate,
    nan_summary,
    normal_quantile,
    pair_outcomes,
    run_spread,
    wilson_interval,
    win_rate,
)


def test_normal_quantile_is_the_usual_z():
    assert normal_quantile(0.95) == pytest.approx(1.959964, abs=1e-6)
    with pytest.raises(ValueError, match="confidence"):
        normal_quantile(95)


def test_wilson_interval_8_of_10_by_hand():
    # z = 1.959964, p = 0.8, z^2 = 3.841459, denom = 1 + z^2/10 = 1.3841459
    # centre = (0.8 + 0.1920729) / 1.3841459 = 0.7167402
    # half = (1.959964 / 1.3841459) * sqrt(0.016 + 0.0096036) = 1.4160097 * 0.1600114 = 0.2265777
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.7167402 - 0.2265777, abs=1e-6)  # 0.4901625
    assert high == pytest.approx(0.7167402 + 0.2265777, abs=1e-6)  # 0.9433179


def test_wilson_interval_zero_successes_by_hand():
    # p = 0: centre = 0.1920729 / 1.3841459 = 0.138767 = half, so [0, 2 * 0.138767]
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0.0, abs=1e-9)
    assert high == pytest.approx(0.277533, abs=2e-6)


def test_wilson_interval_rejects_bad_counts():
    with pytest.raises(ValueError, match="n > 0"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_pair_outcomes_counts_ties_half_and_drops_missing():
    a = np.array([3.0, 1.0, 2.0, np.nan, 5.0])
    b = np.array([1.0, 2.0, 2.0, 0.0, np.nan])
    assert pair_outcomes(a, b).tolist() == [1.0, 0.0, 0.5]


def test_win_rate_wilson_uses_half_ties():
    a = np.array([1.0] * 7 + [0.0] * 2 + [0.5])  # 7 wins, 2 losses, 1 tie vs b = 0.5
    b = np.full(10, 0.5)
    result = win_rate("x@4", "y@4", a, b, judge="judge")
    assert (result.wins, result.losses, result.ties, result.n) == (7, 2, 1, 10)
    assert result.win_rate == pytest.approx(0.75)
    low, high = wilson_interval(7.5, 10)
    assert (result.ci_low, result.ci_high) == (low, high)
    assert low < 0.75 < high


def test_bootstrap_interval_degenerate_and_seeded():
    assert bootstrap_interval(np.ones(20)) == (1.0, 1.0)
    outcomes = np.array([1.0] * 60 + [0.0] * 40)
    first = bootstrap_interval(outcomes, samples=500, seed=3)
    assert first == bootstrap_interval(outcomes, samples=500, seed=3)
    # For n = 100 the percentile bootstrap agrees with Wilson to about 0.02.
    wilson = wilson_interval(60, 100)
    assert first[0] == pytest.approx(wilson[0], abs=0.03)
    assert first[1] == pytest.approx(wilson[1], abs=0.03)


def test_win_rate_bootstrap_and_errors():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 1, 200), rng.normal(0, 1, 200)
    result = win_rate("a", "b", a, b, "j", method="bootstrap", bootstrap_samples=400)
    assert result.method == "bootstrap"
    assert result.ci_low < result.win_rate < result.ci_high
    assert result.win_rate > 0.6
    with pytest.raises(ValueError, match="no item"):
        win_rate("a", "b", np.array([np.nan]), np.array([1.0]), "j")
    with pytest.raises(ValueError, match="method"):
        win_rate("a", "b", a, b, "j", method="exact")


def test_nan_summary():
    summary = nan_summary(np.array([1.0, 3.0, np.nan]))
    assert summary == {"mean": 2.0, "std": math.sqrt(2.0), "n": 2, "missing": 1}
    assert nan_summary(np.array([np.nan]))["mean"] is None


def test_cross_seed_outcomes_pair_every_run_of_a_with_every_run_of_b():
    a = np.array([[1.0, 2.0, np.nan], [3.0, 0.0, 1.0]])
    b = np.array([[2.0, 2.0, 0.0]])
    out = cross_seed_outcomes(a, b)
    assert out.shape == (2, 1, 3)
    np.testing.assert_array_equal(out[0, 0], [0.0, 0.5, np.nan])
    np.testing.assert_array_equal(out[1, 0], [1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="same items"):
        cross_seed_outcomes(a, b[:, :2])


def test_cross_seed_win_rate_by_hand():
    a = np.array([[1.0, 2.0, np.nan], [3.0, 0.0, 1.0]])
    b = np.array([[2.0, 2.0, 0.0]])
    result = cross_seed_win_rate(a, b, samples=500)
    # 5 finite outcomes 0, 0.5, 1, 0, 1 -> 2.5 / 5; pairings: 0.25 and 2/3
    assert result["win_rate"] == pytest.approx(0.5)
    assert result["min_pairing"] == pytest.approx(0.25)
    assert result["max_pairing"] == pytest.approx(2 / 3)
    assert 0.0 <= result["ci_low"] <= 0.5 <= result["ci_high"] <= 1.0
    assert (result["runs_a"], result["runs_b"], result["items"]) == (2, 1, 3)


def test_cross_seed_interval_widens_with_run_to_run_spread():
    rng = np.random.default_rng(0)
    b = rng.normal(size=(3, 400))
    same = np.stack([rng.normal(size=400) + 0.3 for _ in range(3)])
    spread = np.stack([rng.normal(size=400) + shift for shift in (-0.5, 0.3, 1.1)])
    tight = cross_seed_win_rate(same, b, samples=400)
    wide = cross_seed_win_rate(spread, b, samples=400)
    assert tight["ci_high"] - tight["ci_low"] < wide["ci_high"] - wide["ci_low"]
    assert tight["ci_low"] > 0.5  # a consistent 0.3 sigma advantage is resolved


def test_cross_seed_win_rate_degenerate_and_errors():
    result = cross_seed_win_rate(np.ones((2, 4)), np.zeros((3, 4)), samples=100)
    assert result["win_rate"] == result["ci_low"] == result["ci_high"] == 1.0
    with pytest.raises(ValueError, match="no item"):
        cross_seed_win_rate(np.full((1, 2), np.nan), np.zeros((1, 2)))


def test_run_spread():
    spread = run_spread(np.array([[1.0, 3.0], [2.0, np.nan], [4.0, 4.0]]))
    assert spread["mean"] == pytest.approx((2 + 2 + 4) / 3)
    assert spread["std"] == pytest.approx(np.std([2.0, 2.0, 4.0], ddof=1))
    assert (spread["min"], spread["max"], spread["runs"]) == (2.0, 4.0, 3)
