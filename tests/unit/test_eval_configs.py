"""configs/eval/sd*.yaml: the paper's Table 1 evaluations of the SD teachers and their RG-LCMs."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from orchestration.evaluation.config import EvalConfig
from orchestration.evaluation.prompts import HPSV2_STYLES, load_prompts
from reward_service.scorers.registry import describe_scorer
from rglcd.configuration import load_config
from trainer.config import load_trainer_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SD_EVALS = sorted(p for p in (CONFIGS / "eval").glob("sd*.yaml") if p.stem != "sdxl")
TABLE1_SCORERS = {"hpsv2.1", "imagereward", "pickscore", "clipscore"}


def test_there_is_one_per_sd_teacher():
    assert [p.stem for p in SD_EVALS] == ["sd15", "sd21"]


@pytest.mark.parametrize("path", SD_EVALS, ids=lambda p: p.stem)
def test_the_table1_columns_and_rows_load_with_the_eval_schema(path):
    cfg = load_config(EvalConfig, path)
    assert {s.kind for s in cfg.scoring.scorers} == TABLE1_SCORERS
    for scorer in cfg.scoring.scorers:
        describe_scorer(scorer)  # kind, options and checkpoint as the reward service wants them
    assert cfg.judge_name() == "hpsv2.1"
    labels = set(cfg.row_labels())
    assert "teacher@50" in labels and {"lcm@2", "lcm@4"} <= labels
    assert not cfg.fid.enabled and not cfg.hf_noise.enabled  # no real images for these prompts


@pytest.mark.parametrize("path", SD_EVALS, ids=lambda p: p.stem)
def test_each_row_is_the_export_of_an_existing_recipe_with_its_scorer_files(path):
    cfg = load_config(EvalConfig, path)
    teacher = path.stem  # sd15 / sd21
    for model in cfg.models:
        if model.kind == "lcm":
            run_name = Path(model.path).parent.name  # <output.root_dir>/<run_name>/pipeline
            recipe = yaml.safe_load((CONFIGS / f"{run_name}.yaml").read_text())
            assert recipe["run_name"] == run_name and run_name.startswith(f"{teacher}-")
    recipe_scorers = {}
    for recipe in CONFIGS.glob(f"{teacher}-rglcd-lrm-*.yaml"):  # composed with `extends:`
        for scorer in load_trainer_config(recipe, [], check_paths=False).serve.scorers:
            recipe_scorers[scorer.kind] = scorer.checkpoint
    for scorer in cfg.scoring.scorers:  # the same weights the recipes train with
        assert scorer.checkpoint == recipe_scorers[scorer.kind]


@pytest.mark.parametrize("path", SD_EVALS, ids=lambda p: p.stem)
def test_the_commented_coco_fid_overrides_load(path):
    text = path.read_text()
    block = text.split("is a separate run on COCO captions:\n", 1)[1].split("\nmodels:")[0]
    overrides = [w for line in block.splitlines() for w in shlex.split(line.lstrip("# "))]
    cfg = load_config(EvalConfig, path, overrides)
    assert cfg.fid.enabled and cfg.fid.features == "inception" and cfg.max_prompts == 30000
    assert re.search(r"pt_inception-2015-12-05-6726825d\.pth$", cfg.fid.inception_weights)


def test_hpsv2_style_prompts_are_grouped_by_style(tmp_path):
    for style in HPSV2_STYLES:
        (tmp_path / f"{style}.json").write_text(json.dumps([f"{style} {i}" for i in range(3)]))
    cfg = load_config(EvalConfig, SD_EVALS[0])
    assert cfg.prompts.startswith("hpsv2:")
    prompts = load_prompts(f"hpsv2:{tmp_path}", 2)
    assert prompts.group_names() == list(HPSV2_STYLES) and len(prompts) == 8


def test_sdxl_evaluation_loads_its_lora_runs_adapters():
    cfg = load_config(EvalConfig, CONFIGS / "eval" / "sdxl.yaml")
    assert cfg.judge_name() == "hpsv2.1" and cfg.max_prompts is None
    for model in cfg.models:
        if model.kind == "lcm-lora":
            run_name = Path(model.adapters).parent.name  # <output.root_dir>/<run_name>/lora
            recipe = load_trainer_config(CONFIGS / f"{run_name}.yaml", [], check_paths=False)
            assert recipe.model.family == "sdxl" and recipe.model.lora is not None
            assert model.path.endswith(Path(recipe.model.teacher).name)
