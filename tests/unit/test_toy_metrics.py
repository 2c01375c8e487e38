"""HF-noise ratio and mini-CLIP FID on rendered scenes (FID uses the committed mini CLIP)."""

import numpy as np
import pytest
import torch

from rglcd.toy.metrics import hf_noise_ratio, high_frequency_fraction, miniclip_fid
from rglcd.toy.miniclip import load_miniclip
from rglcd.toy.paths import TOY_MINICLIP_DIR
from rglcd.toy.scenes import render, sample_scenes


def _images(split, n, seed):
    images = np.stack([render(s) for s in sample_scenes(split, n, seed)])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def test_hf_ratio_is_one_for_real_and_rises_with_noise():
    real_a, real_b = _images("train", 64, 0), _images("heldout", 64, 0)
    noise = torch.randn(real_b.shape, generator=torch.Generator().manual_seed(0))
    assert hf_noise_ratio(real_b, real_a) == pytest.approx(1.0, abs=0.2)
    small = hf_noise_ratio((real_b + 0.03 * noise).clamp(0, 1), real_a)
    large = hf_noise_ratio((real_b + 0.1 * noise).clamp(0, 1), real_a)
    assert 1.2 < small < large


def test_hf_fraction_of_a_constant_image_is_zero_and_cutoff_checked():
    assert high_frequency_fraction(torch.full((2, 3, 32, 32), 0.4)).abs().max() < 1e-6
    with pytest.raises(ValueError, match="cutoff"):
        high_frequency_fraction(torch.zeros(1, 3, 8, 8), cutoff=0.7)


def test_miniclip_fid_real_below_scrambled():
    model, _ = load_miniclip(TOY_MINICLIP_DIR)
    train, held = _images("train", 200, 1), _images("heldout", 200, 1)
    order = torch.randperm(32 * 32, generator=torch.Generator().manual_seed(0))
    scrambled = held.flatten(2)[:, :, order].view_as(held)  # same colours, no shapes
    real_fid = miniclip_fid(train, held, model)
    assert 0 <= real_fid < miniclip_fid(train, scrambled, model) / 3
    with pytest.raises(ValueError, match="more than"):
        miniclip_fid(train[:10], held[:10], model)
