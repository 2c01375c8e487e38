"""GPU placement before Ray starts: train workers + reward-service replicas must fit the nodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.config import load_trainer_config
from trainer.placement import bundles_fit, gpu_placement_problem, reward_service_gpus

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _recipe(name: str, *overrides: str):
    return load_trainer_config(CONFIGS / name, list(overrides), check_paths=False)


def test_an_lrm_recipe_on_one_8_gpu_node_is_refused_with_a_divisor_of_the_batch():
    cfg = _recipe("sd15-rglcd-lrm-hpsv2.1.yaml")  # 8 workers, batch 40, expert 0.5 + VAE 0.5 GPU
    assert reward_service_gpus(cfg) == [0.5, 0.5]
    problem = gpu_placement_problem(cfg, [8.0])
    assert "8 train workers x 1 GPU + 1 GPU for the reward service" in problem
    assert "wait for them forever" in problem
    # 7 workers would fit but 40 % 7 != 0: the largest divisor of 40 that fits is 5.
    assert "scaling.num_workers=5 " in problem and "[5, 4, 2, 1]" in problem
    fixed = _recipe("sd15-rglcd-lrm-hpsv2.1.yaml", "scaling.num_workers=5")
    assert gpu_placement_problem(fixed, [8.0]) is None


@pytest.mark.parametrize(
    ("recipe", "node_gpus"),
    [
        ("sd15-rglcd-lrm-hpsv2.1.yaml", [8.0, 1.0]),  # the RayJob's two GPU pods
        ("sd15-rglcd-lrm-hpsv2.1.yaml", [8.0, 8.0]),  # the launcher's two p4de nodes
        ("sd15-rglcd-hpsv2.1.yaml", [8.0]),  # direct reward: no reward service
        ("sd15-lcd.yaml", [8.0]),
        ("toy-rglcd-lrm-toy-judge.yaml", []),  # CPU-only toy run on a cluster without GPUs
    ],
)
def test_runs_that_fit_pass(recipe, node_gpus):
    assert gpu_placement_problem(_recipe(recipe), node_gpus) is None


def test_a_batch_with_a_divisor_of_7_gets_7_workers():
    cfg = _recipe("sd15-rglcd-lrm-hpsv2.1.yaml", "lcd.global_batch_size=56")
    assert "scaling.num_workers=7 " in gpu_placement_problem(cfg, [8.0])


def test_no_gpus_at_all_says_so():
    problem = gpu_placement_problem(_recipe("sd15-lcd.yaml"), [0.0])
    assert "nodes have 0 GPUs" in problem and "scaling.use_gpu=false" in problem
    service_only = _recipe("sd15-rglcd-lrm-hpsv2.1.yaml", "scaling.use_gpu=false")
    assert "serve.*.num_gpus" in gpu_placement_problem(service_only, [0.0])


def test_bundles_are_placed_whole_on_one_node():
    assert bundles_fit([0.5, 0.5, 1.0], [2.0])
    assert not bundles_fit([1.0, 1.0], [1.5, 0.5])  # 2 GPUs in all, but no node holds the 2nd
    assert not bundles_fit([2.0], [1.0, 1.0])
