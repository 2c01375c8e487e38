"""The toy judge on rendered ground-truth scenes, and its lack of any autograd path."""

import numpy as np
import pytest
import torch

from rglcd.toy.judge import ToyJudge, connected_components
from rglcd.toy.scenes import render, sample_scenes


def _batch(scenes):
    images = np.stack([render(s) for s in scenes])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def scenes():
    return sample_scenes("validation", 24, seed=11)


def test_correct_scenes_score_high(scenes):
    results = ToyJudge().judge(_batch(scenes), [s.caption for s in scenes])
    assert all(all(r["correct"].values()) for r in results)
    assert min(r["overall"] for r in results) >= 9.5


def test_wrong_colour_or_shape_scores_low(scenes):
    judge, images = ToyJudge(), _batch(scenes)
    wrong = []
    for s in scenes:
        colour = "white" if s.colour != "white" and s.bg != "white" else "red"
        colour = colour if colour not in (s.colour, s.bg) else "green"
        shape = {"circle": "cross", "cross": "circle", "square": "triangle",
                 "triangle": "square"}[s.shape]
        wrong.append((f"a {s.size} {colour} {s.shape} on a {s.bg} background",
                      f"a {s.size} {s.colour} {shape} on a {s.bg} background"))
    colour_res = judge.judge(images, [w[0] for w in wrong])
    shape_res = judge.judge(images, [w[1] for w in wrong])
    assert not any(r["correct"]["colour"] for r in colour_res)
    assert not any(r["correct"]["shape"] for r in shape_res)
    assert max(r["semantic"] for r in colour_res + shape_res) <= 7.5
    right = judge.scores(images, [s.caption for s in scenes])
    assert (judge.scores(images, [w[1] for w in wrong]) < right).all()


def test_noise_lowers_quality(scenes):
    images = _batch(scenes)
    noisy = (images + 0.08 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0)))
    prompts = [s.caption for s in scenes]
    clean_q = ToyJudge().summary(images, prompts)["quality"]
    noisy_q = ToyJudge().summary(noisy.clamp(0, 1), prompts)["quality"]
    assert clean_q == 10.0 and noisy_q < 5.0


def test_not_differentiable(scenes):
    images = _batch(scenes[:4]).requires_grad_(True)
    scores = ToyJudge().scores(images * 1.0, [s.caption for s in scenes[:4]])
    assert scores.grad_fn is None and not scores.requires_grad
    with pytest.raises(RuntimeError):
        scores.sum().backward()


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="prompts"):
        ToyJudge().judge(torch.zeros(2, 3, 32, 32), ["a small red circle on a blue background"])
    with pytest.raises(ValueError, match="RGB"):
        ToyJudge().judge(torch.zeros(1, 32, 32), ["a small red circle on a blue background"])


def test_connected_components_separates_blobs():
    mask = np.zeros((6, 6), dtype=bool)
    mask[0:2, 0:2] = True
    mask[4:6, 3:6] = True
    labels = connected_components(mask)
    assert len(np.unique(labels[mask])) == 2 and (labels[~mask] == -1).all()


def test_batched_connected_components_equal_per_image():
    snake = np.zeros((7, 7), dtype=bool)  # one long path: many propagation rounds
    snake[0, :] = snake[1:3, 6] = snake[2, :] = snake[3:5, 0] = snake[4, :] = True
    blobs = np.zeros((7, 7), dtype=bool)
    blobs[0:2, 0:2] = blobs[5:7, 4:7] = True
    batch = connected_components(np.stack([snake, blobs, np.zeros_like(snake)]))
    for image, labels in zip((snake, blobs, np.zeros_like(snake)), batch, strict=True):
        np.testing.assert_array_equal(labels, connected_components(image))
    assert len(np.unique(batch[0][snake])) == 1 and len(np.unique(batch[1][blobs])) == 2
