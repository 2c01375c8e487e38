"""Reward throughput for many workers: replica scaling, the capacity warning, worker decode."""

from __future__ import annotations

import asyncio

import pytest
import torch

from reward_service.config import ScorerConfig, VaeConfig
from reward_service.latents import LatentDecoder
from reward_service.scaling import Autoscaling, replica_options
from reward_service.scorers.vlm_judge import VlmJudgeScorer
from rglcd.configuration import ConfigError
from rglcd.recipes import RECIPES_DIR
from rglcd.tiny_models import tiny_vae
from trainer.cluster.ray_connect import logical_cpus_needed
from trainer.config import load_trainer_config
from trainer.reward.capacity import capacity_warnings
from trainer.reward.worker_decode import WorkerDecodedExpert

JUDGE_RECIPE = RECIPES_DIR / "sd21-rglcd-lrm-vlm-judge.yaml"
# The judge recipe's reward service before it scaled: one judge replica of 16 calls, one VAE.
BEFORE = [
    "serve.vaes={teacher: {decode_seconds: 0.1}}",
    "lrm.decode_on_worker=false", "serve.scorers.0.autoscaling=null",
    "serve.scorers.0.max_batch_size=8", "serve.scorers.0.scorer_threads=1",
    "serve.scorers.0.options.max_concurrency=16",
]


def judge_recipe(overrides=()):
    return load_trainer_config(JUDGE_RECIPE, list(overrides), check_paths=False)


def test_fixed_and_autoscaled_replicas_become_serve_options():
    from ray.serve.config import AutoscalingConfig

    assert replica_options(VaeConfig(path="/v", num_replicas=2)) == {"num_replicas": 2}
    spec = VaeConfig(path="/v", autoscaling=Autoscaling(max_replicas=4), max_replicas_per_node=1)
    options = replica_options(spec)
    assert "num_replicas" not in options and options["max_replicas_per_node"] == 1
    scaling = AutoscalingConfig(**options["autoscaling_config"])  # Serve accepts every key
    assert (scaling.min_replicas, scaling.max_replicas, scaling.initial_replicas) == (1, 4, 1)
    assert spec.most_replicas == 4


def test_autoscaling_below_num_replicas_is_refused():
    with pytest.raises(ValueError, match="must be >= num_replicas"):
        ScorerConfig(name="j", kind="toy-judge", num_replicas=3,
                     autoscaling=Autoscaling(max_replicas=2))


def test_reserved_cpus_count_the_busiest_replica_count():
    cfg = judge_recipe()
    judge = cfg.serve.scorers[0]
    assert judge.most_replicas == 6
    fixed = judge_recipe(["serve.scorers.0.autoscaling=null"])
    assert logical_cpus_needed(cfg) - logical_cpus_needed(fixed) == pytest.approx(
        5 * judge.num_cpus)


def test_a_judge_runs_as_many_calls_as_its_pool_and_its_batches_allow():
    spec = ScorerConfig(name="j", kind="vlm-judge", max_batch_size=8,
                        options={"base_url": "http://x/v1", "model": "m", "max_concurrency": 64})
    assert VlmJudgeScorer.call_capacity(spec) == (16, 0.5)  # 1 thread x 8 images x 2 calls
    spec.scorer_threads = 8
    assert VlmJudgeScorer.call_capacity(spec) == (64, 0.5)


def test_the_scaled_judge_recipe_keeps_up_and_the_old_one_is_warned_about():
    assert capacity_warnings(judge_recipe()) == []
    expert, vae = capacity_warnings(judge_recipe(BEFORE))
    # 1 replica x 16 calls x 0.5 images x 1.5 s / 3 s = 4 of 120 images a step
    assert "expert 'vlm-judge' answers about 4 images a step" in expert
    assert "8 workers ask for 120" in expert and "(share skipped >= 97%)" in expert
    # 1 VAE replica x 1.5 s / 0.1 s = 15 latents a step
    assert "VAE decoding the expert's latents answers about 15 images" in vae
    assert "lrm.decode_on_worker=true" in vae
    assert capacity_warnings(judge_recipe([*BEFORE, "lrm.step_seconds=null"])) == []


def test_decoding_on_the_worker_needs_no_service_vae():
    assert judge_recipe().serve.vaes == {}
    with pytest.raises(ConfigError, match="serve.vaes has 0 entries"):
        judge_recipe(["lrm.decode_on_worker=false"])


class ImageExpert:
    """Records what reaches `score_images`."""

    def __init__(self) -> None:
        self.calls = []

    async def score_images(self, model, images, prompts):
        self.calls.append((model, images, prompts))
        return "result"


def test_worker_decoded_expert_sends_the_decoded_images_as_uint8():
    decoder = LatentDecoder(tiny_vae(), chunk_size=2)
    expert = ImageExpert()
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    answer = asyncio.run(WorkerDecodedExpert(expert, decoder).score_latents(
        "judge", latents, ["a", "b", "c"], vae="unused"))
    assert answer == "result"
    ((model, images, prompts),) = expert.calls
    assert (model, prompts) == ("judge", ["a", "b", "c"])
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 16, 16)
    expected = (decoder.decode(latents) * 255).round().to(torch.uint8)
    assert torch.equal(images, expected)
