"""orchestration/studies/seed_study.py: argument parsing, the eval config and the summary, by
hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orchestration.studies import seed_study


def test_parse_recipe_with_overrides_and_bad_ones():
    recipe = seed_study.parse_recipe("beta5=configs/toy-rglcd-lrm-toy-judge.yaml reward.beta=5 lcd.max_steps=10")
    assert recipe.name == "beta5"
    assert recipe.config.endswith("configs/toy-rglcd-lrm-toy-judge.yaml")
    assert recipe.overrides == ("reward.beta=5", "lcd.max_steps=10")
    with pytest.raises(ValueError, match="NAME=CONFIG"):
        seed_study.parse_recipe("configs/toy-rglcd-lrm-toy-judge.yaml")
    with pytest.raises(ValueError, match="no config file"):
        seed_study.parse_recipe("x=configs/missing.yaml")
    with pytest.raises(ValueError, match="may hold"):
        seed_study.parse_recipe("a/b=configs/toy-rglcd-lrm-toy-judge.yaml")


def test_parse_comparison():
    recipes = {r.name: r for r in map(seed_study.parse_recipe, seed_study.DEFAULT_RECIPES)}
    assert seed_study.parse_comparison("rglcd@2:lcd@4", recipes) == (("rglcd", 2), ("lcd", 4))
    for bad, message in [("rglcd@2", "two sides"), ("rglcd@0:lcd@4", "A@steps"),
                         ("other@2:lcd@4", "unknown recipe")]:
        with pytest.raises(ValueError, match=message):
            seed_study.parse_comparison(bad, recipes)


def test_eval_config_has_a_model_per_recipe_and_seed(tmp_path):
    args = seed_study.parse_args(["--seeds", "0", "3", "--out", str(tmp_path)])
    recipes = {r.name: r for r in map(seed_study.parse_recipe, seed_study.DEFAULT_RECIPES)}
    comparisons = [seed_study.parse_comparison(c, recipes) for c in seed_study.DEFAULT_COMPARISONS]
    cfg = seed_study.eval_config(args, recipes, comparisons)
    assert cfg.row_labels() == ["rglcd-s0@2", "rglcd-s0@4", "rglcd-s3@2", "rglcd-s3@4",
                                "lcd-s0@4", "lcd-s3@4"]
    assert cfg.models[0].path == str(tmp_path / "rglcd" / "seed0" / "pipeline")
    assert cfg.win_rate_pairs() == [] and cfg.scoring.mode == "in-process"


def test_item_scores_and_summary_by_hand(tmp_path):
    lines = []
    table = {"a-s0@2": [3.0, 1.0], "a-s1@2": [2.0, None], "b-s0@4": [2.0, 2.0],
             "b-s1@4": [1.0, 2.0]}
    for row, values in table.items():
        for item in (1, 0):  # out of order on purpose
            lines.append({"row": row, "item": item, "scores": {"judge": values[item]}})
    path = tmp_path / "scores.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines), encoding="utf-8")
    scores = seed_study.item_scores(path, "judge")
    np.testing.assert_array_equal(scores["a-s1@2"], [2.0, np.nan])
    (result,) = seed_study.summarise(scores, [(("a", 2), ("b", 4))], [0, 1])
    # pairings a0-b0: [1, 0]; a0-b1: [1, 0]; a1-b0: [0.5, -]; a1-b1: [1, -] -> 3.5 / 6
    assert result["win_rate"] == pytest.approx(3.5 / 6)
    assert result["a_run_means"] == [2.0, 2.0] and result["b_run_means"] == [2.0, 1.5]
    assert result["b_runs"]["mean"] == pytest.approx(1.75)
    recipes = {"a": seed_study.parse_recipe("a=configs/toy-rglcd-lrm-toy-judge.yaml reward.beta=5")}
    text = seed_study.markdown([result], seed_study.parse_args([]), recipes)
    assert "- `a`: `configs/toy-rglcd-lrm-toy-judge.yaml` reward.beta=5" in text
    assert "| a@2 | b@4 | 2.000 (2.000, 2.000) | 1.750 (2.000, 1.500) | 0.583 |" in text
