"""The evaluation command (orchestration/commands/evaluate.py) end to end on the shared Ray cluster.

A tiny SD teacher and a tiny exported LCM pipeline (trainer/run_outputs/export.py) are evaluated
on four toy captions x two seeds; scores come through the reward service (the command deploys the
scorers as a temporary Serve app), FID lives in an untrained mini CLIP's feature space.
The teacher is listed twice under two names: with the same noise per (prompt, seed) both
entries must produce identical images, hence identical scores and an all-ties win rate.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from PIL import Image

from orchestration.commands import evaluate
from orchestration.evaluation.grid import grid_shape
from rglcd.tiny_models import IMAGE_SIZE, save_tiny_sd_pipeline, tiny_sd_components, tiny_unet
from rglcd.toy.miniclip import build_miniclip, write_caption_tokenizer, write_preprocess
from trainer.run_outputs.export import export_pipeline

PROMPTS = [
    "a large red circle on a blue background",
    "a small green square on a white background",
    "a large yellow triangle on a black background",
    "a small purple cross on a orange background",  # the toy grammar always says "a"
]
ROWS = ["teacher@2", "teacher-copy@2", "lcm@1", "lcm@2"]
SCALE = 2


@pytest.fixture(scope="module")
def eval_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    teacher = save_tiny_sd_pipeline(root / "teacher")
    export_pipeline(tiny_unet(seed=5, time_cond_proj_dim=256), tiny_sd_components(), root / "lcm")
    tokenizer = write_caption_tokenizer(root / "miniclip")
    build_miniclip(len(tokenizer)).save_pretrained(root / "miniclip")
    write_preprocess(root / "miniclip")
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    config = {
        "models": [
            {"name": "teacher", "kind": "teacher", "path": str(teacher), "steps": [2]},
            {"name": "teacher-copy", "kind": "teacher", "path": str(teacher), "steps": [2]},
            {"name": "lcm", "kind": "lcm", "path": str(root / "lcm"), "steps": [1, 2]},
        ],
        "prompts": str(root / "prompts.txt"),
        "seeds": [0, 1],
        "generation": {"batch_size": 8, "num_cpus_per_task": 3},  # <= 2 workers at once
        "scoring": {
            "app_name": "eval-test-scorers",
            "scorers": [
                {"name": "toy-judge", "kind": "toy-judge", "num_cpus": 0.1},
                {"name": "toy-clip", "kind": "toy-clip", "num_cpus": 0.1,
                 "checkpoint": str(root / "miniclip")},
            ],
        },
        "reference": {"source": "toy:validation", "num_images": 16},
        "fid": {"features": "miniclip", "miniclip_dir": str(root / "miniclip")},
        "output": {"grid_prompts": 3, "grid_scale": SCALE},
    }
    (root / "eval.yaml").write_text(yaml.safe_dump(config))
    return root


def test_evaluate_command_writes_every_output(serve_http_port, eval_setup):
    torch.manual_seed(0)
    out = eval_setup / "out"
    code = evaluate.main(["--config", str(eval_setup / "eval.yaml"), f"output.dir={out}"])
    assert code == 0

    data = json.loads((out / "results.json").read_text())
    assert {"rows", "scorers", "groups", "win_rates", "seeds", "errors", "warnings", "config"} <= set(data)
    assert [r["label"] for r in data["rows"]] == ROWS
    assert data["errors"] == []  # every item scored through the service
    assert any("rank-deficient" in w for w in data["warnings"])  # 8 images < 64 features
    for row in data["rows"]:
        for scorer in ("toy-judge", "toy-clip"):
            summary = row["scores"][scorer]
            assert summary["n"] == 8 and summary["missing"] == 0
            assert math.isfinite(summary["mean"])
        assert math.isfinite(row["fid"]) and row["fid"] >= 0
        assert math.isfinite(row["hf_noise_ratio"]) and row["hf_noise_ratio"] > 0
    by_label = {r["label"]: r for r in data["rows"]}
    assert by_label["teacher@2"]["unet_calls"] == 4 and by_label["lcm@2"]["unet_calls"] == 2
    # Same noise per (prompt, seed): the duplicated teacher gives identical figures.
    assert by_label["teacher@2"]["scores"] == by_label["teacher-copy@2"]["scores"]
    assert by_label["teacher@2"]["fid"] == pytest.approx(by_label["teacher-copy@2"]["fid"])

    assert len(data["win_rates"]) == 6  # every pair of the 4 rows
    for w in data["win_rates"]:
        assert w["n"] == 8 and 0 <= w["ci_low"] <= w["win_rate"] <= w["ci_high"] <= 1
    twin = next(w for w in data["win_rates"] if {w["a"], w["b"]} == set(ROWS[:2]))
    assert twin["ties"] == 8 and twin["win_rate"] == 0.5

    table = (out / "table.md").read_text().splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("| Model"))
    assert "toy-judge (mean)" in table[header] and "FID" in table[header]
    body = table[header + 2 : header + 2 + len(ROWS)]
    assert [line.split("|")[2].strip() for line in body] == ["2", "2", "1", "2"]
    assert "## Head-to-head win rates" in "\n".join(table)

    lines = (out / "scores.jsonl").read_text().splitlines()
    assert len(lines) == len(ROWS) * 8
    first = json.loads(lines[0])  # written as made, in the HPSv2 layout under each seed
    assert first["image"] == "images/teacher@2/seed0/all/00000.jpg"
    assert len(list((out / "images").rglob("*.jpg"))) == len(ROWS) * 8
    for seed in (0, 1):
        with Image.open(out / f"grid_seed{seed}.png") as grid:
            tile = IMAGE_SIZE * SCALE  # 3 prompts x 4 rows of the table, with their labels
            assert grid.size[::-1] == grid_shape(3, 4, tile, tile)
    assert "Rows, top to bottom" in "\n".join(table)
    with Image.open(out / "metrics_vs_steps.png") as plot:
        assert plot.format == "PNG"

