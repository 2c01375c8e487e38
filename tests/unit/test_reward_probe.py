"""The reward probe's ascent step: every item moves by the same RMS latent distance."""

import pytest
import torch

from orchestration.commands.reward_probe import ascent_step


def test_each_item_moves_step_size_in_rms_along_its_gradient():
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(3, 4, 8, 8, generator=gen)
    grad = torch.randn(3, 4, 8, 8, generator=gen) * torch.tensor([1e-4, 1.0, 50.0]).view(3, 1, 1, 1)
    moved = ascent_step(latents, grad, 0.02) - latents
    rms = moved.flatten(1).pow(2).mean(1).sqrt()
    torch.testing.assert_close(rms, torch.full((3,), 0.02))
    cosine = torch.nn.functional.cosine_similarity(moved.flatten(1), grad.flatten(1))
    torch.testing.assert_close(cosine, torch.ones(3))


def test_a_zero_gradient_leaves_the_item_in_place():
    latents = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(ascent_step(latents, torch.zeros_like(latents), 0.02), latents)


def test_width_sweep_redraws_each_scene_at_every_width():
    """By the toy judge, a small object redrawn wider than 15 px no longer reads as small."""
    from orchestration.commands.reward_probe import width_sweep
    from reward_service.scorers.toy import ToyJudgeScorer
    from rglcd.toy.scenes import SIZE_THRESHOLD, sample_scenes

    scenes = [s for s in sample_scenes("heldout", 40, seed=1) if s.size == "small"][:8]
    means = width_sweep(ToyJudgeScorer(), scenes, widths=(9, 13, 17, 23))
    assert list(means) == [9, 13, 17, 23]
    assert min(means[9], means[13]) > 9.5  # the true size: every attribute right
    # past the threshold only the size is wrong: semantic 7.5, overall sqrt(7.5 x 10)
    assert 17 > SIZE_THRESHOLD
    assert means[17] == pytest.approx(75 ** 0.5, abs=0.05)
    assert means[23] == pytest.approx(75 ** 0.5, abs=0.05)
