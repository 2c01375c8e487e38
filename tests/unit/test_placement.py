"""GPU placement before Ray starts: train workers + reward-service replicas must fit the nodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.cluster import placement
from trainer.cluster.placement import bundles_fit, gpu_placement_problem, reward_service_gpus
from trainer.config import load_trainer_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _recipe(name: str, *overrides: str):
    return load_trainer_config(CONFIGS / name, list(overrides), check_paths=False)


WHOLE_GPU_WORKERS = (
    "scaling.gpus_per_worker=1", "serve.scorers.0.num_gpus=0.5", "serve.vaes.teacher.num_gpus=0.5"
)


def test_the_lrm_recipes_fill_exactly_8_gpus():
    """8 workers x 0.75 GPU + expert 0.25 + VAE 0.25 beside two of them: one 8-GPU node."""
    for name in ("sd15-rglcd-lrm-hpsv2.1.yaml", "sd21-rglcd-lrm-imagereward.yaml",
                 "sd21v-rglcd-lrm-pickscore.yaml", "sd21-rglcd-lrm-vlm-judge.yaml"):
        cfg = _recipe(name)
        assert cfg.scaling.num_workers == 8
        assert gpu_placement_problem(cfg, [8.0]) is None, name
        assert gpu_placement_problem(cfg, [7.0]) is not None, name


def test_an_lrm_recipe_with_whole_gpu_workers_on_one_8_gpu_node_is_refused():
    cfg = _recipe("sd15-rglcd-lrm-hpsv2.1.yaml", *WHOLE_GPU_WORKERS)  # 8 x 1 + 0.5 + 0.5 GPU
    assert reward_service_gpus(cfg) == [0.5, 0.5]
    problem = gpu_placement_problem(cfg, [8.0])
    assert "8 train workers x 1 GPU + 1 GPU for the reward service" in problem
    assert "wait for them forever" in problem
    # 7 workers would fit but 40 % 7 != 0: the largest divisor of 40 that fits is 5.
    assert "scaling.num_workers=5 " in problem and "[5, 4, 2, 1]" in problem
    fixed = _recipe("sd15-rglcd-lrm-hpsv2.1.yaml", *WHOLE_GPU_WORKERS, "scaling.num_workers=5")
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
    cfg = _recipe("sd15-rglcd-lrm-hpsv2.1.yaml", *WHOLE_GPU_WORKERS, "lcd.global_batch_size=56")
    assert "scaling.num_workers=7 " in gpu_placement_problem(cfg, [8.0])


def test_no_gpus_at_all_says_so():
    problem = gpu_placement_problem(_recipe("sd15-lcd.yaml"), [0.0])
    assert "nodes have 0 GPUs" in problem and "scaling.use_gpu=false" in problem
    service_only = _recipe(
        "sd15-rglcd-lrm-hpsv2.1.yaml", "scaling.use_gpu=false", "scaling.gpus_per_worker=null"
    )
    assert "serve.*.num_gpus" in gpu_placement_problem(service_only, [0.0])


def test_bundles_are_placed_whole_on_one_node():
    assert bundles_fit([0.5, 0.5, 1.0], [2.0])
    assert not bundles_fit([1.0, 1.0], [1.5, 0.5])  # 2 GPUs in all, but no node holds the 2nd
    assert not bundles_fit([2.0], [1.0, 1.0])


def test_a_fractional_bundle_fits_in_one_gpu_only():
    assert bundles_fit([0.75] * 8 + [0.25, 0.25], [8.0])
    assert not bundles_fit([0.75] * 9, [8.0])  # 6.75 GPUs in all, but one 0.75 per GPU
    assert not bundles_fit([0.5, 0.5, 0.5], [1.0])
    assert bundles_fit([0.5], [7.5])  # the free half of a partly used GPU
    assert not bundles_fit([1.0], [0.5, 0.5])


def test_a_deployed_reward_service_is_not_placed_again():
    cfg = _recipe("sd15-rglcd-lrm-hpsv2.1.yaml", *WHOLE_GPU_WORKERS)  # 8 x 1 + 0.5 + 0.5 GPU
    assert gpu_placement_problem(cfg, [8.0]) is not None
    assert gpu_placement_problem(cfg, [8.0], service_deployed=True) is None


def test_the_check_counts_free_gpus(monkeypatch):
    """GPUs another job holds are not free: 8 on the node, 2 taken, the recipe is refused."""
    monkeypatch.setattr(placement, "_available_per_node", lambda: {"a": {"GPU": 6.0}})
    monkeypatch.setattr(placement, "reward_service_deployed", lambda cfg: False)
    monkeypatch.setattr(placement, "cluster_autoscales", lambda: False)
    assert placement.free_node_gpus() == [6.0]
    with pytest.raises(ValueError, match="nodes have 6 GPUs"):
        placement.check_gpu_placement(_recipe("sd15-rglcd-lrm-hpsv2.1.yaml"))
