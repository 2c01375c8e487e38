"""The held-out judge on rendered toy scenes: right on true renders, lower for wrong captions."""

import numpy as np
import pytest
import torch
from PIL import Image

from rglcd.toy.heldout_judge import HeldoutJudge, colour_name, read_scene, rgb_to_hsv
from rglcd.toy.scenes import COLOURS, SIZES, all_combos, random_scene, render


def _batch(images):
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def scenes():
    """Every (colour, shape, background) at both sizes, at random widths and positions."""
    rng = np.random.default_rng(7)
    return [random_scene(rng, combo, size) for combo in all_combos() for size in SIZES]


def test_every_true_render_is_read_right(scenes):
    read = [(s.caption, read_scene(render(s))["detected"]) for s in scenes]
    truth = [{"colour": s.colour, "shape": s.shape, "size": s.size, "bg": s.bg} for s in scenes]
    assert [r for r, t in zip(read, truth, strict=True) if r[1] != t] == []


def test_scene_colours_by_hue():
    assert {name: colour_name(np.array(rgb)) for name, rgb in COLOURS.items()} == {
        name: name for name in COLOURS}
    assert rgb_to_hsv(np.array([0, 0, 255]))[0] == pytest.approx(240.0)


def test_wrong_caption_scores_lower(scenes):
    picked = scenes[::7]
    images = _batch([render(s) for s in picked])
    swap = {"circle": "cross", "cross": "circle", "square": "triangle", "triangle": "square"}
    wrong_shape = [f"a {s.size} {s.colour} {swap[s.shape]} on a {s.bg} background" for s in picked]
    other = {"small": "large", "large": "small"}
    wrong_size = [f"a {other[s.size]} {s.colour} {s.shape} on a {s.bg} background" for s in picked]
    judge = HeldoutJudge()
    right = judge.scores(images, [s.caption for s in picked])
    assert right.min().item() == pytest.approx(10.0)
    assert (judge.scores(images, wrong_shape) < right).all()
    assert (judge.scores(images, wrong_size) < right).all()


def test_upscaled_renders_any_size(scenes):
    """An SD-sized picture (bilinear x8) reads the same: size is measured at 32 px."""
    picked = scenes[::23]
    big = [np.asarray(Image.fromarray(render(s)).resize((256, 256), Image.BILINEAR))
           for s in picked]
    results = HeldoutJudge().judge(_batch(big), [s.caption for s in picked])
    assert sum(all(r["correct"].values()) for r in results) >= len(picked) - 1


def test_blank_image_finds_no_object():
    blank = np.full((32, 32, 3), COLOURS["blue"], dtype=np.uint8)
    result = HeldoutJudge().judge(_batch([blank]), ["a large red circle on a blue background"])[0]
    assert result["detected"]["shape"] is None and result["correct"]["bg"]
    assert result["overall"] == pytest.approx(10 * (0.8 * 0.25 + 0.2))


def test_bad_input_raises():
    with pytest.raises(ValueError, match="pass one each"):
        HeldoutJudge().judge(torch.zeros(2, 3, 32, 32), ["a large red circle on a blue background"])


def test_registered_as_a_scorer_kind(scenes):
    from reward_service.config import ScorerConfig
    from reward_service.scorers.registry import build_scorer, describe_scorer

    spec = ScorerConfig(name="heldout-judge", kind="heldout-judge")
    assert not describe_scorer(spec).differentiable
    scorer = build_scorer(spec)
    images = _batch([render(scenes[0]), render(scenes[1])])
    items = scorer.score_items(images, [scenes[0].caption, "a photo of a cat"])
    assert items[0].score == pytest.approx(10.0) and items[0].details["correct"]["shape"]
    assert items[1].score is None and "heldout-judge" in items[1].error
