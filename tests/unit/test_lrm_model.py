"""LRM model: any latent resolution, save/load round trip, CLIP initialisation, the freeze."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import CLIPConfig, CLIPModel

from rglcd.tiny_models import tiny_text_encoder, tiny_tokenizer
from trainer.lrm import (
    LatentRewardModel,
    LatentTowerConfig,
    build_optimizer,
    finetune_groups,
    kl_preference_loss,
    set_trainable,
)
from trainer.lrm.model import sincos_2d_position_embedding

PROMPTS = ["a small red circle on a blue background", "a large green cross", "a square"]


def tiny_lrm(seed: int = 0) -> LatentRewardModel:
    tokenizer = tiny_tokenizer()
    text_model = tiny_text_encoder(len(tokenizer), seed=seed)
    torch.manual_seed(seed)
    latent = LatentTowerConfig(4, patch_size=2, width=32, depth=3, heads=2, mlp_ratio=4.0)
    return LatentRewardModel.from_clip(text_model, tokenizer, latent=latent).eval()


def test_reward_is_cosine_and_logits_use_clip_init_scale():
    lrm = tiny_lrm()
    assert lrm.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    z = torch.randn(3, 4, 8, 8)
    reward = lrm.reward(z, prompts=PROMPTS)
    tokens = lrm.tokenize(PROMPTS)
    by_hand = (lrm.embed_latents(z) * lrm.embed_text(**tokens)).sum(-1)
    assert reward.shape == (3,) and (reward.abs() <= 1 + 1e-6).all()
    torch.testing.assert_close(reward, by_hand)
    torch.testing.assert_close(lrm.logits(z, prompts=PROMPTS), reward / 0.07)
    with pytest.raises(ValueError, match="one per latent"):
        lrm.reward(z, prompts=PROMPTS[:2])
    with pytest.raises(ValueError, match="scaled VAE latents"):
        lrm.reward(torch.randn(3, 3, 8, 8), prompts=PROMPTS)


def test_same_lrm_scores_any_latent_resolution():
    lrm = tiny_lrm()
    tokens = lrm.tokenize(PROMPTS)
    rewards = {}
    for size in [(8, 8), (16, 16), (7, 9)]:  # 7x9: not a multiple of the patch size
        latents = torch.randn(3, 4, *size, requires_grad=True)
        rewards[size] = lrm.reward(latents, **tokens)
        rewards[size].sum().backward()
        assert rewards[size].shape == (3,) and torch.isfinite(rewards[size]).all()
        assert latents.grad.abs().sum() > 0
    assert not torch.allclose(rewards[(8, 8)], rewards[(16, 16)])
    # The 2-D sincos table is one function of (row, column): a 4x4 grid is a corner of 8x8.
    small, large = sincos_2d_position_embedding(4, 4, 32), sincos_2d_position_embedding(8, 8, 32)
    torch.testing.assert_close(small.view(4, 4, 32), large.view(8, 8, 32)[:4, :4])


def test_save_load_round_trip(tmp_path):
    lrm = tiny_lrm()
    z = torch.randn(3, 4, 8, 8)
    lrm.save_pretrained(tmp_path / "fp32")
    loaded = LatentRewardModel.from_pretrained(tmp_path / "fp32")
    assert loaded.config == lrm.config
    torch.testing.assert_close(loaded.reward(z, prompts=PROMPTS), lrm.reward(z, prompts=PROMPTS),
                               rtol=0, atol=0)

    lrm.save_pretrained(tmp_path / "fp16", dtype=torch.float16)
    half = LatentRewardModel.from_pretrained(tmp_path / "fp16")
    size32 = (tmp_path / "fp32" / "model.safetensors").stat().st_size
    size16 = (tmp_path / "fp16" / "model.safetensors").stat().st_size
    assert size16 < 0.6 * size32
    torch.testing.assert_close(half.reward(z, prompts=PROMPTS), lrm.reward(z, prompts=PROMPTS),
                               rtol=1e-2, atol=5e-2)
    with pytest.raises(ValueError, match="not a saved LRM"):
        LatentRewardModel.from_pretrained(tmp_path / "missing")


def test_from_clip_dir_copies_text_tower_and_projection(tmp_path):
    tokenizer = tiny_tokenizer()
    text = tiny_text_encoder(len(tokenizer)).config.to_dict()
    vision = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
              "num_attention_heads": 4, "image_size": 16, "patch_size": 8}
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24))
    clip.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    tower = LatentTowerConfig(4, patch_size=2, width=32, depth=4, heads=2, mlp_ratio=4.0)
    lrm = LatentRewardModel.from_clip_dir(tmp_path, latent=tower)
    assert lrm.config.embed_dim == 24
    torch.testing.assert_close(lrm.text_projection.weight, clip.text_projection.weight)
    for key, value in clip.text_model.state_dict().items():
        torch.testing.assert_close(lrm.text_model.state_dict()[key], value)


def test_detached_reward_sends_gradient_to_latents_only():
    lrm = tiny_lrm()
    pred = torch.randn(3, 4, 8, 8, requires_grad=True)
    reward = lrm.detached_reward(pred, prompts=PROMPTS)
    torch.testing.assert_close(reward, lrm.reward(pred, prompts=PROMPTS))
    reward.sum().backward()
    assert pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in lrm.parameters())
    assert all(p.requires_grad for p in lrm.parameters())  # no flag was flipped


def _triplet_step(lrm, optimizer, tokens, generator):
    z = torch.randn(3 * 3, 4, 8, 8, generator=generator)  # 3 triplets, items stacked
    ids = {k: v.repeat_interleave(3, dim=0) for k, v in tokens.items()}
    r_l = lrm.reward(z, **ids).view(3, 3)
    r_e = torch.randn(3, 3, generator=generator)
    loss = kl_preference_loss(r_l, r_e, tau_l=1.0, tau_e=0.5)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_freeze_holds_over_optimizer_steps_even_if_flags_are_flipped():
    lrm = tiny_lrm().train()
    trainable = set(set_trainable(lrm, finetune_groups(lrm, latent_blocks=2, text_blocks=5)))
    assert any(n.startswith("latent_tower.blocks.2.") for n in trainable)
    assert not any(n.startswith("latent_tower.blocks.0.") for n in trainable)
    assert any(n.startswith("text_model.encoder.layers.0.") for n in trainable)  # 5 -> 2 clamped
    assert {"latent_projection.weight", "text_projection.weight"} <= trainable
    assert "logit_scale" not in trainable  # eq. 12 uses tau_L, not the logit scale
    assert "text_model.final_layer_norm.weight" in trainable
    assert not any("patch_embed" in n or "embeddings" in n for n in trainable)

    before = {n: p.detach().clone() for n, p in lrm.named_parameters()}
    optimizer = build_optimizer(lrm, lr=1e-2, weight_decay=0.1)
    tokens, generator = lrm.tokenize(PROMPTS), torch.Generator().manual_seed(0)
    for _ in range(3):
        _triplet_step(lrm, optimizer, tokens, generator)
    lrm.requires_grad_(True)  # what the reference code does; the optimizer still ignores them
    for _ in range(2):
        _triplet_step(lrm, optimizer, tokens, generator)

    for name, param in lrm.named_parameters():
        if name in trainable:
            assert not torch.equal(param, before[name]), f"trainable {name} did not change"
        else:
            assert torch.equal(param, before[name]), f"frozen {name} changed"


def test_unknown_groups_and_negative_counts_raise():
    lrm = tiny_lrm()
    with pytest.raises(ValueError, match="unknown LRM parameter groups"):
        set_trainable(lrm, {"vision_block.0"})
    with pytest.raises(ValueError, match=">= 0"):
        finetune_groups(lrm, latent_blocks=-1)
