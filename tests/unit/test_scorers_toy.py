"""toy-judge and toy-clip scorers on rendered toy scenes and a freshly built mini CLIP."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reward_service.config import ScorerConfig
from reward_service.scorers.registry import build_scorer
from rglcd.toy import miniclip
from rglcd.toy.judge import ToyJudge
from rglcd.toy.scenes import render, scene_for_caption

CAPTIONS = [
    "a large red circle on a blue background",
    "a small green cross on a white background",
    "a large yellow triangle on a black background",
]


def _rendered(captions: list[str], seed: int = 0) -> torch.Tensor:
    """(N, 3, 32, 32) in [0, 1]: one random scene per caption."""
    rng = np.random.default_rng(seed)
    images = np.stack([render(scene_for_caption(c, rng)) for c in captions])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def test_toy_judge_scorer_returns_the_judges_overall():
    scorer = build_scorer(ScorerConfig(name="toy-judge", kind="toy-judge"))
    images = _rendered(CAPTIONS)
    prompts = [CAPTIONS[0], CAPTIONS[1], CAPTIONS[0]]  # the third image is mis-captioned
    expected = [r["overall"] for r in ToyJudge().judge(images, prompts)]
    scores = scorer(images, prompts)
    assert scores.tolist() == pytest.approx(expected)
    assert scores[0] > scores[2]  # a correct caption beats a wrong one
    assert not scorer.differentiable and scorer.input_size == 32
    items = scorer.score_items(images, prompts)
    assert [i.score for i in items] == pytest.approx(expected)
    assert {"semantic", "quality", "detected", "correct"} <= set(items[0].details)
    json.dumps([i.details for i in items])  # details travel as JSON over HTTP


def test_toy_judge_bad_prompt_is_a_per_item_error():
    scorer = build_scorer(ScorerConfig(name="toy-judge", kind="toy-judge"))
    images = _rendered(CAPTIONS[:2])
    items = scorer.score_items(images, ["a purple elephant", CAPTIONS[1]])
    assert items[0].score is None and "toy grammar" in items[0].error
    expected = ToyJudge().judge(images[1:], CAPTIONS[1:2])[0]["overall"]
    assert items[1].score == pytest.approx(expected)
    with pytest.raises(ValueError, match="toy grammar"):
        scorer(images, ["a purple elephant", CAPTIONS[1]])


@pytest.fixture(scope="module")
def mini_clip_dir(tmp_path_factory):
    """An untrained mini CLIP saved exactly as the toy-world build saves the real one."""
    path = tmp_path_factory.mktemp("miniclip")
    tokenizer = miniclip.write_caption_tokenizer(path)
    miniclip.build_miniclip(len(tokenizer), seed=0).save_pretrained(path)
    miniclip.write_preprocess(path)
    return path


@pytest.fixture(scope="module")
def toy_clip(mini_clip_dir):
    spec = ScorerConfig(name="toy-clip", kind="toy-clip", checkpoint=str(mini_clip_dir),
                        device="cpu")
    return build_scorer(spec)


def test_toy_clip_matches_the_toy_worlds_own_features(mini_clip_dir, toy_clip):
    scorer = toy_clip
    images = _rendered(CAPTIONS, seed=1)
    with torch.no_grad():
        scores = scorer(images, CAPTIONS)
    model, tokenizer = miniclip.load_miniclip(mini_clip_dir)
    with torch.no_grad():
        img = miniclip.image_features(model, images)
        txt = miniclip.text_features(model, tokenizer, CAPTIONS)
    assert torch.allclose(scores, (img * txt).sum(-1), atol=1e-5)
    assert scorer.input_size == miniclip.IMAGE_SIZE and scorer.recipe.interpolation == "bilinear"


def test_toy_clip_keeps_gradients(toy_clip):
    scorer = toy_clip
    images = _rendered(CAPTIONS[:2]).requires_grad_(True)
    scorer(images, CAPTIONS[:2]).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_toy_clip_without_artifacts_says_how_to_build(tmp_path):
    spec = ScorerConfig(name="toy-clip", kind="toy-clip", checkpoint=str(tmp_path))
    with pytest.raises(ValueError, match="rglcd-build-toy-world"):
        build_scorer(spec)
