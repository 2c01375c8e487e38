"""Serve deployments that do the work: one batched scorer per configured model, one VAE decoder
per configured VAE. The HTTP ingress (reward_service/app.py) and the trainer's handle client
(reward_service/client.py) both call them through `DeploymentHandle`s.

Batching (docs/method.md §7): `@serve.batch` needs an `async def` over a list; its size
counts *images* (`batch_size_fn`), not requests, and comes from `ScorerConfig` through
`set_max_batch_size` / `set_batch_wait_timeout_s`. A request with more images than one batch is
split into batch-sized jobs first. The scorer runs in worker threads (`scorer_threads`, one by
default) so the replica's event loop keeps queueing the next batch while the current one
computes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from ray import serve

from reward_service.config import ScorerConfig, ServeConfig, VaeConfig
from reward_service.limits import Limits, check_image_batch, check_total_pixels, echo
from reward_service.metrics import ScorerMetrics
from reward_service.scorers.base import ItemScore, Scorer
from reward_service.scorers.registry import build_scorer

ScorerFactory = Callable[[ScorerConfig], Scorer]
Job = tuple[torch.Tensor, list[str]]  # ((n, 3, H, W) float images in [0, 1], n prompts)

# Unhealthy after this many consecutive batches in which every job raised (e.g. a lost GPU);
# Serve then replaces the replica. Single bad inputs only fail their own job.
MAX_CONSECUTIVE_FAILED_BATCHES = 3


def build_registered_scorer(spec: ScorerConfig) -> Scorer:
    return build_scorer(spec)


def as_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 (0..255) or float ([0, 1]) images -> float32 in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float().clamp(0, 1)


def item_problems(images: torch.Tensor) -> list[str | None]:
    """Per image of (N, 3, H, W): why it cannot be scored (non-finite or out-of-range float
    pixels, e.g. latents that decoded to NaN), or None. A wrong dtype fails the request."""
    if images.dtype == torch.uint8:
        return [None] * len(images)
    if not torch.is_floating_point(images):
        raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}")
    flat = images.detach().flatten(1)
    finite = torch.isfinite(flat).all(1)
    low, high = flat.nan_to_num(0.0).aminmax(dim=1)
    problems: list[str | None] = []
    for ok, lo, hi in zip(finite.tolist(), low.tolist(), high.tolist(), strict=True):
        if not ok:
            problems.append("image has NaN or infinite pixels (latents that decode to them are "
                            "far outside the VAE's range: send vae.encode(x) * scaling_factor)")
        elif lo < -1e-4 or hi > 1 + 1e-4:
            problems.append(f"float image pixels must be in [0, 1], got range [{lo:.3g}, {hi:.3g}]"
                            "; map decoded [-1, 1] images with (x / 2 + 0.5).clamp(0, 1)")
        else:
            problems.append(None)
    return problems


def _num_images(jobs: list[Job]) -> int:
    return sum(len(prompts) for _, prompts in jobs)


def _failed(count: int, err: BaseException) -> list[ItemScore]:
    message = f"scorer failed: {type(err).__name__}: {echo(str(err))}"
    return [ItemScore(score=None, error=message) for _ in range(count)]


def _pixel_chunks(indices: list[int], jobs: list[Job], max_pixels: int) -> list[list[int]]:
    """Consecutive runs of `indices` whose images hold at most `max_pixels` together (a job is
    never split: each is within the limit already)."""
    chunks: list[list[int]] = []
    pixels = max_pixels + 1
    for i in indices:
        images = jobs[i][0]
        size = images.shape[0] * images.shape[-2] * images.shape[-1]
        if pixels + size > max_pixels:
            chunks.append([])
            pixels = 0
        chunks[-1].append(i)
        pixels += size
    return chunks


@serve.deployment
class ScorerDeployment:
    """Batched wrapper around one `Scorer`; `score(images, prompts)` -> one ItemScore per item."""

    def __init__(
        self, spec: dict, scorer_factory: ScorerFactory | None = None, limits: dict | None = None
    ) -> None:
        self.spec = ScorerConfig.model_validate(spec)
        self.limits = Limits(**limits) if limits else Limits.from_config(ServeConfig())
        self.scorer = (scorer_factory or build_registered_scorer)(self.spec)
        # One batcher per replica, built here because `max_concurrent_batches` has no setter:
        # `scorer_threads` batches run at once (Serve's default, 1, would leave the other
        # threads idle and a judge's call pool mostly empty).
        self._batched = serve.batch(
            max_batch_size=self.spec.max_batch_size,
            batch_wait_timeout_s=self.spec.batch_wait_timeout_s,
            max_concurrent_batches=self.spec.scorer_threads,
            batch_size_fn=_num_images,
        )(self._score_batch)
        self._executor = ThreadPoolExecutor(
            max_workers=self.spec.scorer_threads, thread_name_prefix="scorer"
        )
        self._metrics = ScorerMetrics(self.spec.name)
        self._waiting = 0  # images enqueued but not yet in a running batch
        self._failed_batches = 0
        self._last_good: Job | None = None  # the health check's canary

    def set_batching(self, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        """Retune batching in place, without a restart (a load test's sweep). The replica's
        max_ongoing_requests is a deployment option and stays as deployed."""
        self.spec = ScorerConfig.model_validate({
            **self.spec.model_dump(), "max_batch_size": max_batch_size,
            "batch_wait_timeout_s": batch_wait_timeout_s, "max_ongoing_requests": None,
        })
        self._batched.set_max_batch_size(self.spec.max_batch_size)
        self._batched.set_batch_wait_timeout_s(self.spec.batch_wait_timeout_s)

    def info(self) -> dict:
        return {
            "name": self.spec.name,
            "differentiable": bool(self.scorer.differentiable),
            "input_size": int(self.scorer.input_size),
        }

    async def score(self, images: torch.Tensor, prompts: list[str]) -> list[ItemScore]:
        """(N, 3, H, W) uint8 or float [0, 1] images, N prompts -> N ItemScores, same order."""
        return (await self.score_groups([(images, list(prompts))]))[0]

    async def score_groups(self, groups: list[Job]) -> list[list[ItemScore]]:
        """Several (images, prompts) groups of one request (e.g. one per image size) in ONE
        call, so a request with many sizes takes one place in the queue, not one per size."""
        problems = []
        for images, prompts in groups:
            if images.ndim != 4 or images.shape[1] != 3 or len(images) != len(prompts):
                raise ValueError(f"images must have shape (N, 3, H, W) with one prompt each, "
                                 f"got {tuple(images.shape)} and {len(prompts)} prompts")
            check_image_batch(images, self.limits)
            problems.append(item_problems(images))
        check_total_pixels(sum(x.shape[0] * x.shape[-2] * x.shape[-1] for x, _ in groups),
                           self.limits)
        size = self.spec.max_batch_size
        jobs, owners = [], []  # owners[j] = (group, item indices) of job j
        for g, ((images, prompts), bad) in enumerate(zip(groups, problems, strict=True)):
            good = [i for i, problem in enumerate(bad) if problem is None]
            for start in range(0, len(good), size):
                idx = good[start : start + size]
                jobs.append((images[idx], [prompts[i] for i in idx]))
                owners.append((g, idx))
        self._waiting += _num_images(jobs)
        self._metrics.set_queue_length(self._waiting)
        results = await asyncio.gather(*(self._batched(job) for job in jobs))
        answers = [
            [ItemScore(score=None, error=problem) if problem else None for problem in bad]
            for bad in problems
        ]
        for (g, idx), items in zip(owners, results, strict=True):
            for i, item in zip(idx, items, strict=True):
                answers[g][i] = item
        return answers

    async def _score_batch(self, jobs: list[Job]) -> list[list[ItemScore]]:
        """One batch of jobs (`self._batched` forms them) scored on the executor."""
        self._waiting -= _num_images(jobs)
        self._metrics.set_queue_length(self._waiting)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._score_jobs, jobs)

    def _score_jobs(self, jobs: list[Job]) -> list[list[ItemScore]]:
        """Score jobs of equal image size together (in calls of at most `max_request_pixels`);
        if a call raises, retry its jobs one by one so that only the job that breaks the
        scorer is answered with errors."""
        start = time.perf_counter()
        results: list[list[ItemScore] | None] = [None] * len(jobs)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, (images, _) in enumerate(jobs):
            groups.setdefault(tuple(images.shape[1:]), []).append(index)
        calls = [c for g in groups.values()
                 for c in _pixel_chunks(g, jobs, self.limits.max_request_pixels)]
        failed_jobs = sum(self._score_call(jobs, indices, results) for indices in calls)
        self._failed_batches = self._failed_batches + 1 if failed_jobs == len(jobs) else 0
        self._metrics.observe_batch(_num_images(jobs), time.perf_counter() - start)
        errors = sum(item.error is not None for result in results for item in result)
        self._metrics.count_item_errors("item_error", errors)
        return results

    def _score_call(self, jobs: list[Job], indices: list[int], results: list) -> int:
        """One scorer call over `jobs[indices]` into `results`; returns how many jobs failed."""
        try:
            images = torch.cat([as_float_images(jobs[i][0]) for i in indices])
            prompts = [p for i in indices for p in jobs[i][1]]
            items = iter(self.scorer.score_items(images, prompts))
            for i in indices:
                results[i] = [next(items) for _ in jobs[i][1]]
            self._last_good = (images[:1].clone(), prompts[:1])
            return 0
        except Exception:  # isolate the failing job below
            failed = 0
            for i in indices:
                try:
                    results[i] = self.scorer.score_items(as_float_images(jobs[i][0]), jobs[i][1])
                except Exception as err:  # becomes explicit item errors
                    results[i] = _failed(len(jobs[i][1]), err)
                    failed += 1
            return failed

    async def check_health(self) -> None:
        """Unhealthy only when the scorer itself is broken: after a run of failed batches the
        last item it did score (the canary) must still score, so bad requests alone never get
        a replica restarted."""
        if self._failed_batches < MAX_CONSECUTIVE_FAILED_BATCHES or self._last_good is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self.scorer.score_items, *self._last_good)
        except Exception as err:
            raise RuntimeError(
                f"scorer {self.spec.name!r} failed {self._failed_batches} batches in a row and "
                f"a canary input: {type(err).__name__}: {echo(str(err))}"
            ) from err
        self._failed_batches = 0


@serve.deployment
class VaeDeployment:
    """Decodes latent requests with one configured VAE (reward_service/latents.py)."""

    def __init__(self, spec: dict) -> None:
        from reward_service.latents import LatentDecoder  # imports diffusers: only here

        self.decoder = LatentDecoder.from_config(VaeConfig.model_validate(spec))
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vae")

    def info(self) -> dict:
        return self.decoder.info()

    async def decode(self, latents: torch.Tensor, deadline: float | None = None) -> torch.Tensor:
        """(N, C, h, w) scaled latents -> (N, 3, H, W) float32 images in [0, 1]; `deadline`
        (a `time.time()` value) stops the decode between chunks once the caller gave up."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.decoder.decode, latents, deadline)
