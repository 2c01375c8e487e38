"""The trainer's handle path (reward_service/client.py) against a real `serve.run`.

Shown here: scoring from inside a Ray task through the sync wrapper, latents decoded by the
service's VAE, per-item errors, and a deliberately slow scorer that times out into explicit
missing results (never 0.0 or None rewards).
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from reward_service.client import RewardClient
from reward_service.latents import LatentDecoder
from tests.helpers.scorers import APP, BrightnessScorer


@pytest.fixture(scope="module")
def service(scorer_app):
    """The shared scorer app (tests/helpers/scorers.py); these tests use its "bright" scorer."""
    return scorer_app


def _inputs(n: int = 6) -> tuple[torch.Tensor, list[str]]:
    torch.manual_seed(0)
    return torch.rand(n, 3, 16, 16), [" ".join(["w"] * (i + 1)) for i in range(n)]


def test_handle_path_from_inside_a_ray_task(service):
    import ray

    images, prompts = _inputs()

    @ray.remote(num_cpus=0.1)
    def score_in_task(images: torch.Tensor, prompts: list[str]) -> list[float | None]:
        client = RewardClient(app_name=APP, timeout_s=30)
        result = client.score_images_sync("bright", images, prompts)
        return [item.score for item in result.items]

    scores = ray.get(score_in_task.remote(images, prompts), timeout=120)
    expected = BrightnessScorer("bright")(images, prompts)  # 6 items > batch 4: split in two
    assert scores == pytest.approx(expected.tolist(), abs=1e-6)


def test_async_path_with_latents_and_per_item_errors(service):
    torch.manual_seed(1)
    latents = torch.randn(3, 4, 8, 8)
    prompts = ["a b", "skip this", "a b c"]
    client = RewardClient(app_name=APP, timeout_s=30)
    result = asyncio.run(client.score_latents("bright", latents, prompts, vae="tiny"))
    decoded = LatentDecoder.from_config(service.vaes["tiny"]).decode(latents)
    expected = BrightnessScorer("bright")(decoded, prompts)
    scores, present = result.as_tensor()
    assert present.tolist() == [True, False, True]
    assert result.missing == [1] and result.items[1].error == "asked to skip"
    assert torch.isnan(scores[1])
    assert scores[[0, 2]].tolist() == pytest.approx(expected[[0, 2]].tolist(), abs=1e-5)


def test_slow_scorer_times_out_into_explicit_missing_results(service):
    images, prompts = _inputs(2)[0], ["slow one", "slow two"]
    client = RewardClient(app_name=APP, timeout_s=0.5, max_retries=1, retry_backoff_s=0.1)
    result = client.score_images_sync("bright", images, prompts)
    assert [item.score for item in result.items] == [None, None]
    assert result.reason is not None and "missing after 2 attempt(s)" in result.reason
    assert "within 0.5 s" in result.items[0].error
    scores, present = result.as_tensor()
    assert not present.any() and torch.isnan(scores).all()


def test_wrong_inputs_raise_before_sending(service):
    client = RewardClient(app_name=APP)
    with pytest.raises(ValueError, match="got 2 images but 1 prompts"):
        client.score_images_sync("bright", torch.rand(2, 3, 8, 8), ["x"])
    with pytest.raises(ValueError, match=r"shape \[N, C, H, W\]"):
        client.score_latents_sync("bright", torch.randn(4, 8, 8), ["x"], vae="tiny")


def test_sync_wrapper_refuses_to_block_an_event_loop(service):
    client = RewardClient(app_name=APP)

    async def inside_loop() -> None:
        client.score_images_sync("bright", torch.rand(1, 3, 8, 8), ["x"])

    with pytest.raises(RuntimeError, match="await the async method"):
        asyncio.run(inside_loop())
