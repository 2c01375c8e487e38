"""Hard negatives of stage reward-clip: degraded copies and counterfactual re-renders of toy
scenes each change what they say, and the toy judge sees it."""

import numpy as np
import pytest
import torch

from orchestration.toy_build import degrade as D
from rglcd.toy.judge import ToyJudge
from rglcd.toy.scenes import render, sample_scenes, shape_mask


@pytest.fixture(scope="module")
def scenes():
    return sample_scenes("validation", 32, seed=3)


@pytest.fixture(scope="module")
def images(scenes):
    return torch.from_numpy(np.stack([render(s) for s in scenes])).permute(0, 3, 1, 2) / 255.0


def test_object_masks_are_the_rendered_shapes(scenes, images):
    expected = np.stack([shape_mask(s.shape, s.width, s.x, s.y) for s in scenes])
    assert np.array_equal(D.object_masks(images).numpy(), expected)


def test_blotches_recolour_only_object_pixels_with_palette_colours(images):
    obj = D.object_masks(images)
    out = D.blotches(images, obj, torch.Generator().manual_seed(0))
    changed = (out != images).any(1)
    assert changed.any() and not (changed & ~obj).any()
    palette = torch.as_tensor(D.PALETTE, dtype=torch.float32) / 255
    pixels = out.permute(0, 2, 3, 1)[changed]
    # Recoloured pixels are copies of palette entries: compare exactly, not by a distance
    # whose matrix-multiply path rounds differently on different CPUs.
    is_palette_colour = (pixels[:, None, :] == palette[None, :, :]).all(-1).any(1)
    assert is_palette_colour.all()


def test_speckle_paints_a_few_background_pixels(images):
    obj = D.object_masks(images)
    out = D.speckle(images, obj, torch.Generator().manual_seed(0))
    changed = (out != images).any(1)
    assert not (changed & obj).any()
    per_image = changed.flatten(1).sum(1)
    assert per_image.min() >= D.SPECKLE_PIXELS[0] and per_image.max() <= D.SPECKLE_PIXELS[1]


def test_blur_keeps_a_flat_image_flat_and_softens_edges(images):
    flat = torch.full((2, 3, 8, 8), 0.3)
    gen = torch.Generator().manual_seed(0)
    torch.testing.assert_close(D.blur(flat, torch.zeros(2, 8, 8, dtype=torch.bool), gen), flat)
    out = D.blur(images, D.object_masks(images), gen)
    assert out.shape == images.shape and 0 < (out - images).abs().max() < 1


def test_degrade_is_seeded_in_range_and_lowers_the_judges_quality(scenes, images):
    a = D.degrade(images, torch.Generator().manual_seed(5))
    b = D.degrade(images, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    assert (a != images).flatten(1).any(1).all()  # every copy is degraded
    captions = [s.caption for s in scenes]
    judge = ToyJudge()
    assert judge.summary(images, captions)["quality"] == 10.0
    assert judge.summary(a, captions)["quality"] < 9.0


def test_degrade_refuses_non_rgb_batches():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        D.degrade(torch.rand(3, 8, 8), torch.Generator())


def test_counterfactuals_change_exactly_one_captioned_attribute(scenes, images):
    from orchestration.toy_build.counterfactual import ATTRIBUTES, counterfactuals

    captions = [s.caption for s in scenes]
    swaps = counterfactuals(images, captions, seed=0)
    assert swaps.shape == (len(ATTRIBUTES), *images.shape)
    assert torch.equal(swaps, counterfactuals(images, captions, seed=0))
    judge = ToyJudge()
    for attribute, swapped in zip(ATTRIBUTES, swaps, strict=True):
        summary = judge.summary(swapped, captions)
        assert summary[f"{attribute}_accuracy"] == 0.0, attribute
        others = [a for a in ("shape", "size", "colour", "bg") if a != attribute]
        assert all(summary[f"{a}_accuracy"] == 1.0 for a in others), (attribute, summary)
        assert summary["quality"] == 10.0


def test_counterfactuals_refuse_mismatched_captions(images):
    from orchestration.toy_build.counterfactual import counterfactuals

    with pytest.raises(ValueError, match="one each"):
        counterfactuals(images, ["a small red circle on a blue background"], seed=0)


def test_the_committed_mini_clip_ranks_true_scenes_over_their_colour_swaps(scenes, images):
    from orchestration.toy_build.counterfactual import counterfactuals
    from orchestration.toy_build.reward_clip_stage import true_over
    from rglcd.toy.miniclip import load_miniclip
    from rglcd.toy.paths import TOY_MINICLIP_DIR

    model, tokenizer = load_miniclip(TOY_MINICLIP_DIR)
    captions = [s.caption for s in scenes]
    colour_swapped = counterfactuals(images, captions, seed=0)[2]
    fractions = true_over(model, tokenizer, images, {"colour": colour_swapped, "same": images},
                          captions)
    assert fractions["colour"] >= 0.9
    assert fractions["same"] == 0.0  # ties are not wins
