"""A small evaluation folder, written by the evaluation's own writers, to build studies from.

Row `good@2` holds true toy renders; row `poor@4` the same scenes with pixel noise and the
object recoloured; every image is scored by the real toy judge and held-out judge. The files
are what an evaluation (`orchestration/evaluation/runner.py`) writes: scores.jsonl
(`write_item_scores`), the images (`save_images`) and results.json's config.models.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from orchestration.evaluation.items import make_items
from orchestration.evaluation.prompts import PromptSet
from orchestration.evaluation.report import write_item_scores
from orchestration.evaluation.runner import save_images
from rglcd.toy.heldout_judge import HeldoutJudge
from rglcd.toy.judge import ToyJudge
from rglcd.toy.scenes import COLOURS, render, sample_scenes

ROWS = ("good@2", "poor@4")


def _poor(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    recoloured = image.copy()
    obj = (image != image[0, 0]).any(-1)
    recoloured[obj] = COLOURS["black"] if image[0, 0].tolist() != list(COLOURS["black"]) else \
        COLOURS["white"]
    return np.clip(recoloured + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)


def write_tiny_eval(out: Path, prompts: int = 6, seeds: tuple[int, ...] = (0,),
                    upscale: int = 1) -> Path:
    """An evaluation output folder with ROWS over `prompts` toy captions x `seeds`."""
    rng = np.random.default_rng(0)
    scenes = sample_scenes("heldout", prompts, seed=3)
    item_prompts = [s.caption for _ in seeds for s in scenes]
    good = np.stack([render(s) for _ in seeds for s in scenes])
    stacks = {"good@2": good, "poor@4": np.stack([_poor(x, rng) for x in good])}
    scores = {}
    for label, stack in stacks.items():
        floats = torch.from_numpy(stack).permute(0, 3, 1, 2).float() / 255
        scores[label] = {"toy-judge": ToyJudge().scores(floats, item_prompts).numpy(),
                         "heldout-judge": HeldoutJudge().scores(floats, item_prompts).numpy()}
    if upscale > 1:  # an SD-sized evaluation (the toy scorers judge at 32 px anyway)
        size = good.shape[1] * upscale
        stacks = {k: np.stack([np.asarray(Image.fromarray(x).resize((size, size), Image.NEAREST))
                               for x in v]) for k, v in stacks.items()}
    out.mkdir(parents=True, exist_ok=True)
    groups = ["heldout"] * len(item_prompts)
    items = make_items(PromptSet([s.caption for s in scenes], ["heldout"] * len(scenes)),
                       list(seeds))
    names = save_images(str(out), stacks, items)
    write_item_scores(out / "scores.jsonl", scores, item_prompts, groups,
                      [seed for seed in seeds for _ in scenes], names)
    config = {"models": [{"name": "good", "trained_on": ["toy-judge"]},
                         {"name": "poor", "trained_on": []}]}
    (out / "results.json").write_text(json.dumps({"config": config}), encoding="utf-8")
    return out
