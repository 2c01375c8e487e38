"""LRM losses and metrics as pure tensor functions (no models, no config, no I/O).

- ``kl_preference_loss``: online finetuning of the LRM towards an expert (paper eq. 12,
  Algorithm 4, docs/method.md §3).
- ``preference_agreement``: how often LRM and expert prefer the same latent of a pair.
- ``clip_contrastive_loss`` / ``retrieval_accuracy`` / ``attribute_accuracy``: LRM pretraining
  (paper appendix B) and what it learned.

Items of a triplet: 0 = z0 (real latent), 1 = z1 (online output), 2 = z2 (target output).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PAIRS = ((0, 1), (0, 2), (1, 2))  # eq. 12: i in {0, 1}, j in {i+1 .. 2}
_FIRST = torch.tensor([i for i, _ in PAIRS])
_SECOND = torch.tensor([j for _, j in PAIRS])


def _pairs(scores: torch.Tensor) -> torch.Tensor:
    """(N, 3) per-item scores -> (N, 3 pairs, 2) [score_i, score_j] for pairs (0,1),(0,2),(1,2)."""
    first, second = _FIRST.to(scores.device), _SECOND.to(scores.device)
    return torch.stack([scores[:, first], scores[:, second]], dim=-1)


def _check_triplets(lrm_rewards, expert_scores, item_mask) -> torch.Tensor:
    if lrm_rewards.ndim != 2 or lrm_rewards.shape[1] != 3:
        raise ValueError(f"lrm_rewards must be (N, 3) for (z0, z1, z2); got {tuple(lrm_rewards.shape)}.")
    if expert_scores.shape != lrm_rewards.shape:
        raise ValueError(
            f"expert_scores shape {tuple(expert_scores.shape)} must equal lrm_rewards shape "
            f"{tuple(lrm_rewards.shape)}."
        )
    if item_mask is None:
        item_mask = torch.ones_like(expert_scores, dtype=torch.bool)
    elif item_mask.shape != expert_scores.shape:
        raise ValueError(f"item_mask must be (N, 3) like expert_scores; got {tuple(item_mask.shape)}.")
    item_mask = item_mask.bool()
    if not torch.isfinite(expert_scores[item_mask]).all():
        raise ValueError(
            "expert_scores has NaN/inf at items the mask marks present; mark missing scores "
            "False in item_mask (they are excluded, never filled)."
        )
    return item_mask


def kl_preference_loss(
    lrm_rewards: torch.Tensor,
    expert_scores: torch.Tensor,
    tau_l: float,
    tau_e: float,
    item_mask: torch.Tensor | None = None,
    real_image_preference: bool = False,
) -> torch.Tensor:
    """Eq. 12 in the direction KL(Q || P), summed over the 3 pairs, averaged over triplets.

    ``P_ij = softmax([r_L_i, r_L_j] / tau_L)`` (LRM, differentiable),
    ``Q_ij = softmax([r_E_i, r_E_j] / tau_E)`` (expert, stop-grad: ``expert_scores`` never
    receives a gradient).

    Direction: the paper writes KL(P || sg(Q)); we follow the reference code's KL(Q || P),
    i.e. cross-entropy of P against the expert's target Q minus a constant. Its gradient in
    logit space is simply ``(P - Q) / tau_L``, bounded and non-vanishing when the LRM is
    confidently wrong. KL(P || Q) is mode-seeking and its gradient
    ``P_m (log P_m/Q_m - KL) / tau_L`` scales with log Q: for the paper's pairwise-only
    expert (tau_E -> 0, Q -> one-hot) it grows like 1/tau_E and is infinite at Q = [1, 0],
    whereas KL(Q || P) tends to the logistic (Bradley-Terry) loss ``-log P_preferred``.

    Args:
        lrm_rewards: (N, 3) LRM rewards of (z0, z1, z2).
        expert_scores: (N, 3) expert scores of the decoded (z0, z1, z2).
        tau_l, tau_e: temperatures (> 0); tau_e small = pairwise-only expert.
        item_mask: (N, 3) bool, False where the expert score is missing (may be NaN there).
            A pair counts only if both items are present; missing scores are never filled.
        real_image_preference: in pairs (0, j), if the expert prefers the generated z_j over
            the real z0, use Q = [0.5, 0.5] instead (reference flag ``smooth_gt_label``).

    Returns:
        Scalar loss: 3 * mean KL over valid pairs (= sum over pairs, mean over triplets when
        nothing is masked); 0 (still differentiable) when no pair is valid.
    """
    if tau_l <= 0 or tau_e <= 0:
        raise ValueError(f"temperatures must be > 0; got tau_l={tau_l}, tau_e={tau_e}.")
    item_mask = _check_triplets(lrm_rewards, expert_scores, item_mask)
    pair_mask = _pairs(item_mask).all(dim=-1)  # (N, 3)
    expert = torch.where(item_mask, expert_scores.detach(), 0.0)  # stop_grad(Q); no NaN leaks

    expert_pairs = _pairs(expert)  # (N, 3, 2)
    log_q = F.log_softmax(expert_pairs / tau_e, dim=-1)
    if real_image_preference:
        contains_real = torch.tensor([i == 0 for i, _ in PAIRS], device=expert.device)
        prefers_generated = (expert_pairs[..., 1] > expert_pairs[..., 0]) & contains_real
        log_q = torch.where(prefers_generated[..., None], math.log(0.5), log_q)
    log_p = F.log_softmax(_pairs(lrm_rewards) / tau_l, dim=-1)

    q = log_q.exp()
    kl = torch.where(q > 0, q * (log_q - log_p), 0.0).sum(dim=-1)  # (N, 3) KL(Q || P)
    kl = torch.where(pair_mask, kl, 0.0)
    return kl.sum() * len(PAIRS) / pair_mask.sum().clamp(min=1)


def preference_agreement(
    lrm_rewards: torch.Tensor,
    expert_scores: torch.Tensor,
    item_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fraction of valid pairs where LRM and expert prefer the same item (scalar tensor).

    Pairs where the expert ties carry no preference and are not counted; NaN if no pair counts.
    """
    item_mask = _check_triplets(lrm_rewards, expert_scores, item_mask)
    expert = torch.where(item_mask, expert_scores, 0.0)
    lrm_diff = _pairs(lrm_rewards.detach()).diff(dim=-1).squeeze(-1)  # (N, 3) r_j - r_i
    expert_diff = _pairs(expert).diff(dim=-1).squeeze(-1)
    counted = _pairs(item_mask).all(dim=-1) & (expert_diff != 0)
    agree = (lrm_diff.sign() == expert_diff.sign()) & counted
    if not counted.any():
        return torch.tensor(float("nan"))
    return agree.sum().float() / counted.sum()


def clip_contrastive_loss(
    latent_emb: torch.Tensor,
    caption_emb: torch.Tensor,
    caption_index: torch.Tensor,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """Symmetric CLIP loss between B latents and the K *distinct* captions of their batch.

    latent_emb (B, E) and caption_emb (K, E) are unit-norm; caption_index (B,) gives each
    latent's caption row. Captions repeat in the toy world, so a caption can own several
    latents: latent -> caption is plain cross-entropy over K, caption -> latent uses a soft
    target spread uniformly over its latents (no duplicate caption is a false negative).
    With all captions distinct (K = B, caption_index = arange) this is CLIP's loss exactly.
    """
    num_captions = caption_emb.shape[0]
    logits = logit_scale * latent_emb @ caption_emb.t()  # (B, K)
    latent_to_caption = F.cross_entropy(logits, caption_index)
    owners = caption_index[None, :] == torch.arange(num_captions, device=logits.device)[:, None]
    if not owners.any(dim=1).all():
        raise ValueError("every caption in caption_emb must be the caption of some latent.")
    target = owners.float() / owners.sum(dim=1, keepdim=True)  # (K, B)
    caption_to_latent = -(target * F.log_softmax(logits.t(), dim=-1)).sum(-1).mean()
    return (latent_to_caption + caption_to_latent) / 2


def retrieval_accuracy(
    latent_emb: torch.Tensor,
    caption_emb: torch.Tensor,
    caption_index: torch.Tensor,
    ks: tuple[int, ...] = (1, 5),
) -> dict[str, float]:
    """Zero-shot caption ranking: fraction of latents whose caption is among the top-k of K.

    latent_emb (N, E), caption_emb (K, E) unit-norm; caption_index (N,) the true caption row.
    """
    similarity = latent_emb @ caption_emb.t()  # (N, K)
    result = {}
    for k in ks:
        top = similarity.topk(min(k, similarity.shape[1]), dim=1).indices  # (N, k)
        hit = (top == caption_index[:, None]).any(dim=1)
        result[f"top{k}"] = hit.float().mean().item()
    return result


def attribute_accuracy(
    latent_emb: torch.Tensor,
    caption_emb: torch.Tensor,
    caption_index: torch.Tensor,
    attributes: list[dict[str, str]],
) -> dict[str, float]:
    """Per attribute, the fraction of latents whose own caption outranks every caption that
    differs from it in that attribute only (e.g. the right shape among 4 shape words).

    Caption retrieval over many captions is dominated by the easy attributes; this probe says
    which attribute a proxy RM can see. attributes[k] are caption k's {name: value}; latents
    whose caption has no such rival in the bank are not counted.
    """
    similarity = (latent_emb @ caption_emb.t()).cpu()  # (N, K); indexed item by item below
    result = {}
    for name in attributes[0]:
        rest = [tuple(v for other, v in attrs.items() if other != name) for attrs in attributes]
        rivals: dict[tuple, list[int]] = {}  # captions equal in every other attribute
        for k, key in enumerate(rest):
            rivals.setdefault(key, []).append(k)
        hits = []
        for i, k in enumerate(caption_index.tolist()):
            group = rivals[rest[k]]
            if len(group) > 1:
                hits.append(group[int(similarity[i, group].argmax())] == k)
        result[f"{name}_accuracy"] = sum(hits) / len(hits) if hits else float("nan")
    return result
