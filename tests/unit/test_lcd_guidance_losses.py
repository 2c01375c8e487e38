"""Guidance embedding vs diffusers' LCM pipeline, CFG form, LCD distances, EMA."""

import copy

import pytest
import torch
from diffusers import LatentConsistencyModelPipeline

from trainer.lcd import (
    apply_guidance,
    distance_loss,
    ema_update_,
    guidance_scale_embedding,
    l2_loss,
    pseudo_huber_loss,
    sample_guidance_scale,
)


@pytest.mark.parametrize("dim", [256, 32, 7])
def test_guidance_embedding_matches_lcm_pipeline(dim):
    w = torch.tensor([0.0, 1.0, 4.5, 7.0, 14.9])
    ref = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, embedding_dim=dim)
    ours = guidance_scale_embedding(w, dim)
    assert ours.shape == (5, dim)
    torch.testing.assert_close(ours, ref, atol=0.0, rtol=0.0)


def test_guidance_embedding_layout():
    emb = guidance_scale_embedding(torch.tensor([0.0]), 256)
    assert torch.all(emb[0, :128] == 0.0) and torch.all(emb[0, 128:] == 1.0)  # [sin, cos]
    with pytest.raises(ValueError, match="1-D"):
        guidance_scale_embedding(torch.zeros(2, 1), 256)


def test_sample_guidance_scale_range_and_seed():
    w = sample_guidance_scale(1000, 5.0, 15.0, torch.Generator().manual_seed(0))
    assert w.min() >= 5.0 and w.max() <= 15.0 and w.std() > 2.0
    again = sample_guidance_scale(1000, 5.0, 15.0, torch.Generator().manual_seed(0))
    assert torch.equal(w, again)
    with pytest.raises(ValueError, match="w_max"):
        sample_guidance_scale(2, 3.0, 1.0)


def test_apply_guidance_lcm_form():
    cond, uncond = torch.full((2, 1, 1, 1), 3.0), torch.full((2, 1, 1, 1), 1.0)
    out = apply_guidance(cond, uncond, torch.tensor([0.0, 2.0]))
    assert out.flatten().tolist() == [3.0, 7.0]  # x_c + w (x_c - x_u)


def test_pseudo_huber_hand_values():
    pred = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float16)
    target = torch.zeros(3, dtype=torch.float16)
    c = 1e-3
    expected = sum((d * d + c * c) ** 0.5 - c for d in [0.0, 1.0, 2.0]) / 3
    loss = pseudo_huber_loss(pred, target, c)
    assert loss.dtype == torch.float32
    assert abs(loss.item() - expected) < 1e-6
    assert abs(l2_loss(pred, target).item() - 5.0 / 3) < 1e-6
    assert distance_loss(pred, target, "l2", c) == l2_loss(pred, target)
    assert distance_loss(pred, target, "huber", huber_c=0.5) == pseudo_huber_loss(pred, target, 0.5)
    with pytest.raises(ValueError, match="loss_type"):
        distance_loss(pred, target, "l1", c)


def test_ema_update_direction():
    torch.manual_seed(0)
    online = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    target = copy.deepcopy(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
        online[1].running_mean.fill_(2.0)
    before = [p.clone() for p in target.parameters()]
    ema_update_(target, online, mu=0.95)
    for b, t, o in zip(before, target.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(t, 0.95 * b + 0.05 * o, atol=1e-7, rtol=1e-6)
    assert torch.all(target[1].running_mean == 2.0)
    with pytest.raises(ValueError, match="mu"):
        ema_update_(target, online, mu=1.5)
    with pytest.raises(ValueError, match="differ"):
        ema_update_(torch.nn.Linear(3, 4), online, mu=0.95)
