"""KL preference loss (eq. 12, direction KL(Q || P)) and preference agreement, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.lrm.losses import kl_preference_loss, preference_agreement

# One triplet (z0, z1, z2). With two items, softmax([a, b] / tau)[0] = sigmoid((a - b) / tau).
R_L = [1.0, 0.0, 2.0]
R_E = [3.0, 1.0, 1.0]
TAU_L, TAU_E = 0.5, 2.0


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _kl_bernoulli(q: float, p: float) -> float:
    """KL(Q || P) between [q, 1-q] and [p, 1-p]."""
    return q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))


def _hand_pair(i: int, j: int, r_l=R_L, r_e=R_E) -> tuple[float, float]:
    return _sigmoid((r_l[i] - r_l[j]) / TAU_L), _sigmoid((r_e[i] - r_e[j]) / TAU_E)


def test_kl_preference_loss_matches_hand_computation_and_stops_expert_gradient():
    # P(0 over 1) = sigmoid(2) = 0.8808, Q = sigmoid(1) = 0.7311 -> KL 0.08261
    # P(0 over 2) = sigmoid(-2) = 0.1192, Q = sigmoid(1) = 0.7311 -> KL 1.00684
    # P(1 over 2) = sigmoid(-4) = 0.0180, Q = sigmoid(0) = 0.5    -> KL 1.32500
    r_l = torch.tensor([R_L], requires_grad=True)
    r_e = torch.tensor([R_E], requires_grad=True)
    loss = kl_preference_loss(r_l, r_e, TAU_L, TAU_E)
    assert loss.item() == pytest.approx(0.0826077 + 1.0068421 + 1.3250027, abs=1e-5)
    hand = sum(_kl_bernoulli(q, p) for p, q in map(lambda ij: _hand_pair(*ij), [(0, 1), (0, 2), (1, 2)]))
    assert loss.item() == pytest.approx(hand, abs=1e-6)

    loss.backward()
    assert r_e.grad is None  # stop_grad(Q): nothing reaches the expert scores
    # KL(Q || P): d/d r_L_m = sum over pairs containing m of (P_m - Q_m) / tau_L.
    p01, q01 = _hand_pair(0, 1)
    p02, q02 = _hand_pair(0, 2)
    p12, q12 = _hand_pair(1, 2)
    expected = [
        ((p01 - q01) + (p02 - q02)) / TAU_L,
        ((1 - p01) - (1 - q01) + (p12 - q12)) / TAU_L,
        ((1 - p02) - (1 - q02) + (1 - p12) - (1 - q12)) / TAU_L,
    ]
    assert r_l.grad[0].tolist() == pytest.approx(expected, abs=1e-5)


def test_kl_preference_loss_means_over_the_batch():
    one = torch.tensor([R_L])
    other = torch.tensor([[0.0, 0.0, 0.0]])
    both = kl_preference_loss(torch.cat([one, other]), torch.tensor([R_E, R_E]), TAU_L, TAU_E)
    separate = [kl_preference_loss(x, torch.tensor([R_E]), TAU_L, TAU_E) for x in (one, other)]
    assert both.item() == pytest.approx(sum(s.item() for s in separate) / 2, abs=1e-6)


def test_item_mask_excludes_missing_scores_without_filling_them():
    r_l = torch.tensor([R_L, R_L], requires_grad=True)
    r_e = torch.tensor([R_E, [float("nan")] * 3])  # second triplet: expert never answered
    mask = torch.tensor([[True, True, False], [False, False, False]])
    loss = kl_preference_loss(r_l, r_e, TAU_L, TAU_E, item_mask=mask)
    p01, q01 = _hand_pair(0, 1)
    # only pair (0, 1) of triplet 0 is valid: 3 * mean over valid pairs = 3 * KL01
    assert loss.item() == pytest.approx(3 * _kl_bernoulli(q01, p01), abs=1e-6)
    loss.backward()
    assert torch.isfinite(r_l.grad).all() and r_l.grad[1].abs().sum() == 0
    assert r_l.grad[0, 2] == 0  # item 2 was masked

    empty = kl_preference_loss(r_l, r_e, TAU_L, TAU_E, item_mask=torch.zeros(2, 3, dtype=bool))
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ValueError, match="item_mask"):
        kl_preference_loss(r_l, r_e, TAU_L, TAU_E)  # NaN at items marked present


def test_real_image_preference_flattens_q_when_expert_prefers_generated():
    r_e = [1.0, 3.0, 0.0]  # expert prefers z1 over the real z0, z0 over z2
    r_l = torch.tensor([R_L])
    loss = kl_preference_loss(r_l, torch.tensor([r_e]), TAU_L, TAU_E, real_image_preference=True)
    p01, _ = _hand_pair(0, 1, r_e=r_e)
    p02, q02 = _hand_pair(0, 2, r_e=r_e)  # z0 preferred: Q kept
    p12, q12 = _hand_pair(1, 2, r_e=r_e)  # no real image in the pair: Q kept
    hand = _kl_bernoulli(0.5, p01) + _kl_bernoulli(q02, p02) + _kl_bernoulli(q12, p12)
    assert loss.item() == pytest.approx(hand, abs=1e-6)
    plain = kl_preference_loss(r_l, torch.tensor([r_e]), TAU_L, TAU_E)
    assert plain.item() != pytest.approx(loss.item(), abs=1e-3)


def test_pairwise_only_expert_gives_logistic_loss():
    # tau_E -> 0: Q is one-hot on the expert's choice; KL(Q || P) = -log P(preferred).
    r_l = torch.tensor([R_L])
    loss = kl_preference_loss(r_l, torch.tensor([R_E]), TAU_L, tau_e=1e-8)
    # expert: z0 > z1, z0 > z2, z1 == z2 (tie -> Q = [0.5, 0.5])
    p01, _ = _hand_pair(0, 1)
    p02, _ = _hand_pair(0, 2)
    p12, _ = _hand_pair(1, 2)
    hand = -math.log(p01) - math.log(p02) + _kl_bernoulli(0.5, p12)
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(hand, abs=1e-6)


def test_invalid_arguments_raise_value_error():
    r = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="temperatures"):
        kl_preference_loss(r, r, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        kl_preference_loss(torch.zeros(2, 2), torch.zeros(2, 2), 1.0, 1.0)


def test_preference_agreement_counts_pairs_and_skips_ties_and_missing():
    r_l = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 2.0]])
    r_e = torch.tensor([[3.0, 1.0, 1.0], [0.0, 5.0, float("nan")]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    # triplet 0: (0,1) agree, (0,2) disagree, (1,2) expert tie -> skipped; triplet 1: (0,1) agree
    assert preference_agreement(r_l, r_e, mask).item() == pytest.approx(2 / 3)
    none = preference_agreement(r_l, r_e, torch.zeros(2, 3, dtype=bool))
    assert math.isnan(none.item())
