"""The evaluation's flat-region noise column: computed per image on the worker side, folded by
the row accumulator (NaN images left out and counted), summarised per row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from orchestration.evaluation.accumulate import ImageFigures, RowAccumulator
from orchestration.evaluation.image_metrics import flat_noise
from orchestration.evaluation.summary import reference_flat_noise
from rglcd.toy.scenes import render, sample_scenes


def _renders(n: int) -> np.ndarray:
    return np.stack([render(scene) for scene in sample_scenes("validation", n, seed=0)])


def _noisy(images: np.ndarray, std: float) -> np.ndarray:
    noise = np.random.default_rng(0).normal(0, 255 * std, images.shape)
    return np.clip(images + noise, 0, 255).round().astype(np.uint8)


def _stripes() -> np.ndarray:
    """An image that is all edge (stripes 2 px wide): no flat pixel."""
    columns = (np.arange(16) // 2 % 2 * 255).astype(np.uint8)
    return np.broadcast_to(columns[None, None, :, None], (1, 16, 16, 3)).copy()


def test_flat_noise_is_zero_on_clean_scenes_and_rises_with_noise():
    clean = _renders(6)
    assert flat_noise(clean).abs().max() < 0.5
    noisy = flat_noise(_noisy(clean, 0.05))
    assert noisy.min() > 5  # 0.05 of the range is ~13 levels; the median absorbs some
    assert flat_noise(_stripes()).isnan().all()


def test_flat_noise_batches_do_not_change_the_figures():
    images = _noisy(_renders(5), 0.03)
    assert torch.allclose(flat_noise(images, batch=2), flat_noise(images, batch=5))


def test_accumulated_flat_noise_is_the_mean_over_all_images_without_the_flat_less():
    images = _noisy(_renders(7), 0.02)
    values = torch.cat([flat_noise(images), torch.tensor([float("nan")])])  # one flat-less
    acc = RowAccumulator(0, [], set())
    for start in range(0, len(values), 3):
        acc.add([], None, {}, ImageFigures(flat=values[start : start + 3]))
    assert acc.flat.mean == pytest.approx(float(values[:7].mean()), rel=1e-6)
    assert acc.flat.count == 7 and acc.flat.skipped == 1 and acc.flat.seen == 8
    assert acc.hf.mean is None and acc.moments.count == 0  # not computed: nothing folded
    assert reference_flat_noise(acc) == {"reference_flat_noise": acc.flat.mean,
                                         "reference_flat_noise_skipped": 1}
    assert reference_flat_noise(None)["reference_flat_noise"] is None
