"""Flat-region noise rises with noise and not with sharper edges; random-conv FID sees noise."""

import numpy as np
import pytest
import torch

from orchestration.toy_build.degrade import blur
from rglcd.toy.metrics import high_frequency_fraction
from rglcd.toy.quality import RandomConvFeatures, flat_region_noise, random_conv_fid
from rglcd.toy.scenes import render, sample_scenes


def _images(split, n, seed):
    images = np.stack([render(s) for s in sample_scenes(split, n, seed)])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def _noisy(images, std):
    gen = torch.Generator().manual_seed(3)
    return (images + std * torch.randn(images.shape, generator=gen)).clamp(0, 1)


def _sharpen(images, amount):
    """Unsharp mask: the edges' contrast overshoots, flat fills stay as they were."""
    soft = blur(images, None, torch.Generator().manual_seed(1))
    return (images + amount * (images - soft)).clamp(0, 1)


def test_flat_region_noise_rises_with_noise():
    clean = _images("validation", 64, 0)
    levels = [flat_region_noise(_noisy(clean, s)).mean().item() for s in (0.0, 0.02, 0.05, 0.1)]
    assert levels[0] < 0.1  # flat fills, 0-255 levels
    assert levels[1] > 3 and levels[1] < levels[2] < levels[3]


def test_flat_region_noise_ignores_sharper_and_softer_edges_unlike_the_hf_fraction():
    clean = _images("validation", 64, 0)
    soft = blur(clean, None, torch.Generator().manual_seed(2))  # samples are smoother than renders
    for base in (clean, soft):
        sharper = _sharpen(base, 2.0)
        assert flat_region_noise(sharper).mean() < 0.5
        assert high_frequency_fraction(sharper).mean() > 1.5 * high_frequency_fraction(base).mean()
    assert flat_region_noise(_noisy(soft, 0.02)).mean() > 3


def test_flat_region_noise_checks_its_input():
    with pytest.raises(ValueError, match="RGB"):
        flat_region_noise(torch.zeros(2, 1, 8, 8))


def test_random_conv_features_are_fixed_by_the_seed():
    images = _images("train", 4, 0)
    a, b = RandomConvFeatures()(images), RandomConvFeatures()(images)
    assert a.shape == (4, RandomConvFeatures().num_features) and torch.equal(a, b)
    assert not torch.allclose(a, RandomConvFeatures(seed=1)(images))


def test_random_conv_fid_rises_with_noise_and_scrambled_shapes():
    real, other = _images("train", 192, 0), _images("validation", 192, 0)
    order = torch.randperm(32 * 32, generator=torch.Generator().manual_seed(0))
    scrambled = other.flatten(2)[:, :, order].view_as(other)  # same colours, no shapes
    clean = random_conv_fid(real, other)
    assert clean < random_conv_fid(real, _noisy(other, 0.1)) / 2
    assert clean < random_conv_fid(real, scrambled) / 2
    with pytest.raises(ValueError, match="more than"):
        random_conv_fid(real[:10], other[:10])
