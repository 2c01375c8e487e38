"""Serve deployments that do the work: one batched scorer per configured model, one VAE decoder
per configured VAE. The HTTP ingress (reward_service/app.py) and the trainer's handle client
(reward_service/client.py) both call them through `DeploymentHandle`s.

Batching (docs/method.md §7): `@serve.batch` needs an `async def` over a list; its size
counts *images* (`batch_size_fn`), not requests, and comes from `ScorerConfig` through
`set_max_batch_size` / `set_batch_wait_timeout_s`. A request with more images than one batch is
split into batch-sized jobs first. The scorer runs in one worker thread so the replica's event
loop keeps queueing the next batch while the current one computes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from ray import serve

from reward_service.config import ScorerConfig, VaeConfig
from reward_service.metrics import ScorerMetrics
from reward_service.scorers.base import ItemScore, Scorer, check_batch

ScorerFactory = Callable[[ScorerConfig], Scorer]
Job = tuple[torch.Tensor, list[str]]  # ((n, 3, H, W) float images in [0, 1], n prompts)

# Unhealthy after this many consecutive batches in which every job raised (e.g. a lost GPU);
# Serve then replaces the replica. Single bad inputs only fail their own job.
MAX_CONSECUTIVE_FAILED_BATCHES = 3


def build_registered_scorer(spec: ScorerConfig) -> Scorer:
    from reward_service.scorers.registry import build_scorer

    return build_scorer(spec)


def as_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 (0..255) or float ([0, 1]) images -> float32 in [0, 1]; refuse anything else."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not torch.is_floating_point(images):
        raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}")
    images = images.float()
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values")
    if images.numel() and (images.min() < -1e-4 or images.max() > 1 + 1e-4):
        raise ValueError(
            f"float images must be in [0, 1], got range [{images.min():.3g}, {images.max():.3g}]"
            "; map decoded [-1, 1] images with (x / 2 + 0.5).clamp(0, 1)"
        )
    return images.clamp(0, 1)


def _num_images(jobs: list[Job]) -> int:
    return sum(len(prompts) for _, prompts in jobs)


def _failed(count: int, err: BaseException) -> list[ItemScore]:
    message = f"scorer failed: {type(err).__name__}: {err}"
    return [ItemScore(score=None, error=message) for _ in range(count)]


@serve.deployment
class ScorerDeployment:
    """Batched wrapper around one `Scorer`; `score(images, prompts)` -> one ItemScore per item."""

    def __init__(self, spec: dict, scorer_factory: ScorerFactory | None = None) -> None:
        self.spec = ScorerConfig.model_validate(spec)
        self.scorer = (scorer_factory or build_registered_scorer)(self.spec)
        self._batched.set_max_batch_size(self.spec.max_batch_size)
        self._batched.set_batch_wait_timeout_s(self.spec.batch_wait_timeout_s)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorer")
        self._metrics = ScorerMetrics(self.spec.name)
        self._waiting = 0  # images enqueued but not yet in a running batch
        self._failed_batches = 0

    def info(self) -> dict:
        return {
            "name": self.spec.name,
            "differentiable": bool(self.scorer.differentiable),
            "input_size": int(self.scorer.input_size),
        }

    async def score(self, images: torch.Tensor, prompts: list[str]) -> list[ItemScore]:
        """(N, 3, H, W) uint8 or float [0, 1] images, N prompts -> N ItemScores, same order."""
        images = as_float_images(images)
        check_batch(images, list(prompts))
        size = self.spec.max_batch_size
        starts = range(0, len(prompts), size)
        jobs = [(images[i : i + size], list(prompts[i : i + size])) for i in starts]
        self._waiting += len(prompts)
        self._metrics.set_queue_length(self._waiting)
        results = await asyncio.gather(*(self._batched(job) for job in jobs))
        return [item for chunk in results for item in chunk]

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01, batch_size_fn=_num_images)
    async def _batched(self, jobs: list[Job]) -> list[list[ItemScore]]:
        self._waiting -= _num_images(jobs)
        self._metrics.set_queue_length(self._waiting)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._score_jobs, jobs)

    def _score_jobs(self, jobs: list[Job]) -> list[list[ItemScore]]:
        """Score jobs of equal image size together; if a group raises, retry its jobs one by
        one so that only the job that breaks the scorer is answered with errors."""
        start = time.perf_counter()
        results: list[list[ItemScore] | None] = [None] * len(jobs)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, (images, _) in enumerate(jobs):
            groups.setdefault(tuple(images.shape[1:]), []).append(index)
        failed_jobs = 0
        for indices in groups.values():
            try:
                images = torch.cat([jobs[i][0] for i in indices])
                prompts = [p for i in indices for p in jobs[i][1]]
                items = iter(self.scorer.score_items(images, prompts))
                for i in indices:
                    results[i] = [next(items) for _ in jobs[i][1]]
            except Exception:  # isolate the failing job below
                for i in indices:
                    try:
                        results[i] = self.scorer.score_items(*jobs[i])
                    except Exception as err:  # becomes explicit item errors
                        results[i] = _failed(len(jobs[i][1]), err)
                        failed_jobs += 1
        self._failed_batches = self._failed_batches + 1 if failed_jobs == len(jobs) else 0
        self._metrics.observe_batch(_num_images(jobs), time.perf_counter() - start)
        errors = sum(item.error is not None for result in results for item in result)
        self._metrics.count_item_errors("item_error", errors)
        return results

    def check_health(self) -> None:
        if self._failed_batches >= MAX_CONSECUTIVE_FAILED_BATCHES:
            raise RuntimeError(
                f"scorer {self.spec.name!r} failed {self._failed_batches} batches in a row"
            )


@serve.deployment
class VaeDeployment:
    """Decodes latent requests with one configured VAE (reward_service/latents.py)."""

    def __init__(self, spec: dict) -> None:
        from reward_service.latents import LatentDecoder  # imports diffusers: only here

        self.decoder = LatentDecoder.from_config(VaeConfig.model_validate(spec))
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vae")

    def info(self) -> dict:
        return self.decoder.info()

    async def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) scaled latents -> (N, 3, H, W) float32 images in [0, 1]."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.decoder.decode, latents)
