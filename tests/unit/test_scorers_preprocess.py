"""Tensor preprocessing of the reward models: sizes, explicit antialiasing, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reward_service.scorers.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    PreprocessRecipe,
    center_crop,
    pad_to_square,
    preprocess,
    resize_longest_side,
    resize_shortest_side,
)


def test_shortest_side_resize_then_center_crop_sizes():
    images = torch.rand(2, 3, 48, 96)
    resized = resize_shortest_side(images, 24)
    assert resized.shape == (2, 3, 24, 48)
    out = preprocess(images, PreprocessRecipe(size=24, mode="shortest-crop"))
    assert out.shape == (2, 3, 24, 24)


def test_longest_side_resize_then_zero_pad_centres_the_image():
    images = torch.ones(1, 3, 30, 60)  # white, wide
    resized = resize_longest_side(images, 20)
    assert resized.shape == (1, 3, 10, 20)
    padded = pad_to_square(resized, 20)
    assert padded.shape == (1, 3, 20, 20)
    # 5 black rows above and below, the white image in the middle (open_clip's split)
    assert padded[..., :5, :].abs().sum() == 0 and padded[..., 15:, :].abs().sum() == 0
    assert torch.allclose(padded[..., 5:15, :], torch.ones(1, 3, 10, 20))


def test_resize_is_antialiased_bicubic():
    torch.manual_seed(0)
    images = torch.rand(1, 3, 64, 64)
    ours = resize_shortest_side(images, 16)
    expected = F.interpolate(images, size=(16, 16), mode="bicubic", antialias=True).clamp(0, 1)
    aliased = F.interpolate(images, size=(16, 16), mode="bicubic", antialias=False).clamp(0, 1)
    assert torch.allclose(ours, expected, atol=1e-6)
    assert (ours - aliased).abs().max() > 0.05  # the flag matters on noise
    # antialiasing averages the noise: far less variance than point-sampling it
    assert ours.var() < 0.5 * aliased.var()


def test_normalisation_uses_clip_statistics():
    images = torch.full((1, 3, 8, 8), 0.5)
    out = preprocess(images, PreprocessRecipe(size=8))
    expected = [(0.5 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD, strict=True)]
    assert torch.allclose(out[0, :, 0, 0], torch.tensor(expected))


@pytest.mark.parametrize("mode", ["shortest-crop", "longest-pad"])
def test_preprocess_keeps_gradients(mode):
    images = torch.rand(2, 3, 40, 28, requires_grad=True)
    out = preprocess(images, PreprocessRecipe(size=16, mode=mode))
    out.pow(2).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_bad_recipe_and_bad_crop_raise_clear_errors():
    with pytest.raises(ValueError, match="resize mode"):
        PreprocessRecipe(size=8, mode="stretch")
    with pytest.raises(ValueError, match="interpolation"):
        PreprocessRecipe(size=8, interpolation="nearest")
    with pytest.raises(ValueError, match="resize first"):
        center_crop(torch.rand(1, 3, 4, 4), 8)
