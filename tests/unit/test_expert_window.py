"""The adaptive expert window (trainer/reward/expert_window.py): pure functions of measured
times."""

from __future__ import annotations

import pytest

from trainer.reward.expert_window import ema, window_steps


def test_ema_starts_at_the_first_sample_and_moves_by_its_weight():
    assert ema(None, 3.0) == 3.0
    assert ema(2.0, 4.0, weight=0.25) == pytest.approx(2.5)
    assert ema(2.0, 4.0, weight=1.0) == 4.0
    with pytest.raises(ValueError):
        ema(1.0, 2.0, weight=0.0)


def test_a_fast_expert_keeps_the_configured_window_exactly():
    # 0.2 s round trip at 1.5 s a step, twice over, needs 2 steps: below K = 4, so K stays.
    assert window_steps(0.2, 1.5, base=4, maximum=32) == 4
    assert window_steps(2.25, 1.5, base=4, maximum=32) == 4  # ceil(3) + 1 = 4


def test_a_slow_expert_widens_the_window_to_cover_its_round_trip():
    # 3 s a call at 0.5 s a step, given twice the round trip: ceil(12) + 1 = 13 steps.
    assert window_steps(3.0, 0.5, base=4, maximum=32) == 13
    assert window_steps(3.05, 0.5, base=4, maximum=32) == 14  # a partial step rounds up
    assert window_steps(3.0, 0.5, base=4, maximum=32, headroom=1.0) == 7


def test_the_window_is_bounded_by_the_configured_maximum():
    assert window_steps(60.0, 0.1, base=4, maximum=32) == 32
    assert window_steps(60.0, 0.1, base=4, maximum=2) == 4  # never below the fixed window


def test_synchronous_mode_and_missing_measurements_keep_the_base():
    assert window_steps(60.0, 0.1, base=0, maximum=32) == 0
    assert window_steps(None, 0.1, base=4, maximum=32) == 4
    assert window_steps(6.0, None, base=4, maximum=32) == 4
    assert window_steps(6.0, 0.0, base=4, maximum=32) == 4
    with pytest.raises(ValueError):
        window_steps(1.0, 1.0, base=-1, maximum=32)
