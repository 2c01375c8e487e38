"""Streaming evaluation pieces without Ray: items and their image names, the HPSv2 protocol's
prompt folder, row accumulators, model kinds (LCM-LoRA) and the shared pipeline components."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from orchestration.evaluation.accumulate import ImageFigures, RowAccumulator, grid_item_indices
from orchestration.evaluation.config import ModelSpec
from orchestration.evaluation.generation import load_pipeline
from orchestration.evaluation.items import image_name, make_items
from orchestration.evaluation.prompts import HPSV2_STYLES, PromptSet, load_prompts
from orchestration.evaluation.report import EvalResults, RowResult, group_table


def test_hpsv2_folder_gives_four_styles_and_the_benchmark_layout(tmp_path):
    for style in HPSV2_STYLES:
        (tmp_path / f"{style}.json").write_text(json.dumps([f"{style} {i}" for i in range(3)]))
    prompts = load_prompts(f"hpsv2:{tmp_path}", limit=2)
    assert prompts.group_names() == list(HPSV2_STYLES) and len(prompts) == 8
    items = make_items(prompts, seeds=[0, 7])
    assert [i.index for i in items] == list(range(16))
    photo = [i for i in items if i.group == "photo" and i.seed == 7]
    assert [image_name("rg@4", i, "jpg") for i in photo] == [
        "images/rg@4/seed7/photo/00000.jpg", "images/rg@4/seed7/photo/00001.jpg"]
    assert photo[0].prompt == "photo 0"
    assert items[0].noise_seed != items[8].noise_seed  # the seed changes the noise
    (tmp_path / "photo.json").unlink()
    with pytest.raises(ValueError, match="has no photo.json"):
        load_prompts(f"hpsv2:{tmp_path}")


def test_row_accumulator_keeps_scores_and_grid_images_only():
    items = make_items(PromptSet(["a", "b", "c"], ["g"] * 3), seeds=[0, 1])
    grid = grid_item_indices(items, num_seeds=2, grid_prompts=2)
    assert grid == {0, 1, 3, 4}
    acc = RowAccumulator(len(items), ["judge"], grid)
    for chunk in (items[:4], items[4:]):  # out of order within the row is fine too
        images = np.stack([np.full((2, 2, 3), i.index, np.uint8) for i in chunk])
        acc.add(chunk, images, {"judge": np.array([float(i.index) for i in chunk])},
                ImageFigures(torch.randn(len(chunk), 3), torch.full((len(chunk),), 0.5)), 1.0)
    assert acc.scores["judge"].tolist() == [0, 1, 2, 3, 4, 5]
    assert acc.done == 6 and acc.moments.count == 6 and acc.hf.mean == 0.5
    assert [int(x[0, 0, 0]) for x in acc.grid_stack()] == [0, 1, 3, 4]


def test_lcm_lora_kind_defaults_to_no_cfg_and_adapters_need_it():
    lora = ModelSpec(name="x", kind="lcm-lora", path="p", adapters="a", steps=[4])
    assert lora.guidance == 1.0 and lora.unet_calls(4) == 4
    assert ModelSpec(name="y", kind="lcm-lora", path="p", guidance_scale=2.0).unet_calls(4) == 8
    with pytest.raises(ValueError, match="kind=lcm-lora"):
        ModelSpec(name="z", kind="lcm", path="p", adapters="a")


def test_group_table_averages_the_styles():
    row = RowResult("m@4", "m", "lcm", "lcm", 4, 4, 8.5)
    row.scores = {"hps": {"mean": 0.3, "groups": {"anime": 0.2, "photo": 0.4}}}
    table = group_table(EvalResults([row], ["hps"], ["anime", "photo"]), "hps")
    assert "mean of groups" in table and "| 0.200 | 0.400 | 0.300 |" in table


def test_teacher_loads_without_its_safety_checker(tmp_path):
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPImageProcessor

    from rglcd.tiny_models import tiny_sd_components

    parts = tiny_sd_components()
    parts.pop("noise_scheduler")
    # a teacher folder that ships a feature extractor (as SD 1.5 does) but no checker weights
    pipe = StableDiffusionPipeline(**parts, safety_checker=None,
                                   feature_extractor=CLIPImageProcessor(),
                                   requires_safety_checker=False)
    pipe.save_pretrained(tmp_path / "teacher")
    loaded = load_pipeline(ModelSpec(name="t", kind="teacher", path=str(tmp_path / "teacher")))
    assert loaded.safety_checker is None and loaded.feature_extractor is None
