"""LRM pretraining pieces: CLIP loss with repeated captions, retrieval accuracy, a few steps."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rglcd.tiny_models import tiny_text_encoder, tiny_tokenizer, tiny_vae
from trainer.lrm import (
    LatentRewardModel,
    LatentTowerConfig,
    attribute_accuracy,
    build_optimizer,
    clip_contrastive_loss,
    pretrain_groups,
    retrieval_accuracy,
    set_trainable,
)
from trainer.lrm.pretrain import (
    cache_caption_embeddings,
    contrastive_step,
    encode_images,
    evaluate_retrieval,
    prepare_split,
)


def test_clip_loss_equals_standard_clip_when_captions_are_distinct():
    torch.manual_seed(0)
    latent = F.normalize(torch.randn(5, 8), dim=-1)
    text = F.normalize(torch.randn(5, 8), dim=-1)
    scale = torch.tensor(10.0)
    logits = scale * latent @ text.t()
    labels = torch.arange(5)
    standard = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    torch.testing.assert_close(clip_contrastive_loss(latent, text, labels, scale), standard)


def test_clip_loss_treats_repeated_captions_as_positives_not_negatives():
    text = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    latent = text[[0, 0, 1]]  # latents 0 and 1 share caption 0, each matches it perfectly
    index = torch.tensor([0, 0, 1])
    scale = torch.tensor(50.0)
    # caption 0 -> latents: target [0.5, 0.5, 0]; logits [50, 50, 0] -> CE = log 2 (+ ~0)
    loss = clip_contrastive_loss(latent, text, index, scale)
    expected = 0.5 * (0.0 + (np.log(2) + 0.0) / 2)
    assert loss.item() == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="caption of some latent"):
        clip_contrastive_loss(latent, text, torch.tensor([0, 0, 0]), scale)


def test_retrieval_accuracy_by_hand():
    captions = torch.eye(6)
    latents = torch.eye(6)[[0, 1, 2, 3]].clone()
    latents[1] = F.normalize(captions[1] * 0.1 + captions[4], dim=0)  # caption 1 ranks 2nd
    result = retrieval_accuracy(latents, captions, torch.tensor([0, 1, 2, 3]), ks=(1, 5))
    assert result == {"top1": 0.75, "top5": 1.0}


def test_attribute_accuracy_by_hand():
    # Captions: 0 red circle, 1 red cross, 2 blue circle (no blue cross in the bank).
    attrs = [{"colour": "red", "shape": "circle"}, {"colour": "red", "shape": "cross"},
             {"colour": "blue", "shape": "circle"}]
    captions = torch.eye(3)
    # Latent 0 (a red circle) sits nearest caption 1: right colour, wrong shape.
    latents = torch.tensor([[0.4, 0.9, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    latents = latents / latents.norm(dim=1, keepdim=True)
    result = attribute_accuracy(latents, captions, torch.tensor([0, 1, 2]), attrs)
    # shape: latent 0 vs {0, 1} -> picks 1 (miss); latent 1 vs {0, 1} -> 1 (hit);
    # latent 2's caption has no shape rival (no blue cross): not counted.
    assert result["shape_accuracy"] == 0.5
    # colour: latent 0 vs {0, 2} -> 0 (hit); latent 2 vs {0, 2} -> 2 (hit); latent 1: no rival.
    assert result["colour_accuracy"] == 1.0


def test_contrastive_steps_learn_to_match_latents_and_captions():
    torch.manual_seed(0)
    vae, tokenizer = tiny_vae(), tiny_tokenizer()
    colours = np.array([[220, 40, 40], [40, 70, 220], [40, 170, 60], [245, 245, 245]], np.uint8)
    images = np.repeat(colours, 4, axis=0)[:, None, None, :].repeat(16, 1).repeat(16, 2)
    captions = [f"a {c} image" for c in ("red", "blue", "green", "white") for _ in range(4)]
    # As for a real VAE, pick the scaling factor that gives unit-variance latents.
    unscaled = encode_images(vae, images, sample=False) / vae.config.scaling_factor
    assert unscaled.shape == (16, 4, 8, 8)
    vae.register_to_config(scaling_factor=float(1 / unscaled.std()))
    # Posterior means: an untrained VAE's posterior noise would swamp the colours.
    data = prepare_split(vae, tokenizer, images, captions, sample=False)
    assert data.latents.shape == (16, 4, 8, 8) and len(data.captions) == 4
    assert data.latents.std().item() == pytest.approx(1.0, abs=1e-3)
    sampled = prepare_split(vae, tokenizer, images, captions, seed=1)  # RG-LCD's z0 recipe
    assert not torch.allclose(sampled.latents, data.latents)

    lrm = LatentRewardModel.from_clip(
        tiny_text_encoder(len(tokenizer)), tokenizer,
        latent=LatentTowerConfig(4, patch_size=2, width=32, depth=2, heads=2, mlp_ratio=4.0),
        latent_scaling_factor=vae.config.scaling_factor,
    )
    trainable = set_trainable(lrm, pretrain_groups(lrm))
    assert not any(n.startswith("text_") for n in trainable)  # pretrained text tower locked
    assert evaluate_retrieval(lrm, data)["top1"] < 1.0

    cached = copy.deepcopy(data)
    cache_caption_embeddings(lrm, cached)  # locked text tower: same loss, no text forward
    probe = copy.deepcopy(lrm)
    probe_optimizer = build_optimizer(probe, lr=0.0)
    batch = torch.arange(16)
    assert contrastive_step(probe, probe_optimizer, cached, batch)["loss"] == pytest.approx(
        contrastive_step(probe, probe_optimizer, data, batch)["loss"], rel=1e-5
    )

    optimizer = build_optimizer(lrm, lr=3e-3)
    losses = [contrastive_step(lrm, optimizer, data, batch)["loss"] for _ in range(50)]
    # floor: log(4) / 2 (each caption owns 4 latents); uniform guessing is about 2.08
    assert losses[-1] < 0.9, losses
    metrics = evaluate_retrieval(lrm, data)
    assert metrics == {"top1": 1.0, "top5": 1.0, "num_latents": 16, "num_captions": 4}
    colours = evaluate_retrieval(lrm, data, attributes=lambda c: {"colour": c.split()[1]})
    assert colours["colour_accuracy"] == 1.0  # the captions differ in colour only
