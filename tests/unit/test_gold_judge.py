"""Truth-keeping degradations and the judge-accuracy study on a few scenes."""

import numpy as np
import torch

from orchestration.studies.gold_judge import JUDGES, accuracy, markdown, study
from rglcd.toy import distort
from rglcd.toy.scenes import render, sample_scenes


def _scenes(n):
    scenes = sample_scenes("validation", n, seed=0)
    images = torch.from_numpy(np.stack([render(s) for s in scenes])).permute(0, 3, 1, 2) / 255
    return images.float(), [s.caption for s in scenes]


def test_colour_shift_and_warp_keep_the_truth_and_change_the_pixels():
    images, prompts = _scenes(32)
    gen = torch.Generator().manual_seed(0)
    shifted, warped = distort.colour_shift(images, gen), distort.warp(images, gen)
    assert shifted.shape == warped.shape == images.shape
    assert (shifted - images).abs().amax() <= distort.COLOUR_SHIFT + 1e-6
    assert not torch.equal(warped, images)
    assert set(warped.unique().tolist()) <= set(images.unique().tolist())  # fills stay flat
    assert accuracy(shifted, prompts)["toy-judge"]["colour"] == 1.0


def test_study_reads_every_condition_with_both_judges():
    results = study(6)
    assert "clean" in results and "VAE round trip" in results and "all of them" in results
    for row in results.values():
        assert set(JUDGES) <= set(row) and row["flat_noise"] >= 0
    assert results["clean"]["toy-judge"]["all"] == results["clean"]["heldout-judge"]["all"] == 1.0
    assert "| clean | 0.00 | toy-judge | 100.0 |" in markdown(results, 6)
