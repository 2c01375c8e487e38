"""In-cluster client of the reward service for the trainer (DeploymentHandles, no HTTP).

    client = RewardClient(app_name="rewards", timeout_s=30, max_retries=2)
    result = await client.score_images("toy-judge", images, prompts)       # in an event loop
    result = client.score_latents_sync("toy-judge", latents, prompts, vae="toy")  # Train worker
    scores, present = result.as_tensor()   # (N,) float32 (NaN where missing), (N,) bool

Large arrays go through the object store (`ray.put`; a top-level ObjectRef argument arrives
resolved in the replica, docs/method.md §7), so a retry resends only a reference. Every call
answers one `ItemScore` per item: a score, or an explicit error (per-item scorer error,
timeout, overload, lost replica) - never a made-up 0.0 or a bare None. Wrong inputs (shapes,
lengths) raise ValueError before anything is sent.

The sync wrappers run the coroutine on a private event-loop thread, so they work from plain
threads (Ray Train workers, Ray tasks) without calling `DeploymentResponse.result()` inside an
event loop; inside an event loop, await the async methods instead.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import ray
import torch
from ray import serve
from ray.exceptions import RayError
from ray.serve.exceptions import BackPressureError, RayServeException
from ray.serve.handle import DeploymentHandle

from reward_service.app import scorer_deployment_name, vae_deployment_name
from reward_service.scorers.base import ItemScore, check_batch
from rglcd.codecs import check_latents

T = TypeVar("T")
# Overload, lost replicas/objects, Serve-internal errors: worth another try. ValueError is not.
RETRYABLE = (asyncio.TimeoutError, BackPressureError, RayError, RayServeException)


@dataclass
class ScoreResult:
    """One call's answer: one ItemScore per item, in order; `reason` set when the call failed."""

    model: str
    items: list[ItemScore]
    reason: str | None = None

    @property
    def missing(self) -> list[int]:
        return [i for i, item in enumerate(self.items) if item.score is None]

    def as_tensor(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) float32 scores with NaN where missing, and the (N,) bool mask of present ones."""
        present = torch.tensor([item.score is not None for item in self.items])
        values = [item.score if item.score is not None else float("nan") for item in self.items]
        return torch.tensor(values, dtype=torch.float32), present


def worst_case_seconds(timeout_s: float, max_retries: int, retry_backoff_s: float) -> float:
    """Every attempt times out: (max_retries + 1) x timeout_s plus the doubling backoff sleeps
    between attempts (`RewardClient._with_retries`)."""
    backoff = sum(backoff_seconds(retry_backoff_s, a) for a in range(1, max_retries + 1))
    return (max_retries + 1) * timeout_s + backoff


def backoff_seconds(retry_backoff_s: float, attempt: int) -> float:
    """The sleep before retry `attempt` (1, 2, ...): retry_backoff_s, doubling each time."""
    return retry_backoff_s * 2 ** (attempt - 1)


def missing_result(model: str, count: int, reason: str) -> ScoreResult:
    items = [ItemScore(score=None, error=reason) for _ in range(count)]
    return ScoreResult(model=model, items=items, reason=reason)


class _LoopThread:
    """A daemon thread running one event loop, for the sync wrappers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True, name="reward-client").start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


class RewardClient:
    """Async (and sync-wrapped) scoring through the reward service's deployment handles."""

    def __init__(
        self,
        app_name: str = "rewards",
        timeout_s: float = 30.0,
        max_retries: int = 2,
        retry_backoff_s: float = 0.5,
    ) -> None:
        if timeout_s <= 0 or max_retries < 0 or retry_backoff_s < 0:
            raise ValueError("timeout_s must be > 0, max_retries and retry_backoff_s >= 0")
        self.app_name = app_name
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self._handles: dict[str, DeploymentHandle] = {}
        self._loop_thread: _LoopThread | None = None

    @property
    def worst_case_s(self) -> float:
        """The longest one scoring call takes before it returns (scores or a missing result)."""
        return worst_case_seconds(self.timeout_s, self.max_retries, self.retry_backoff_s)

    def __reduce__(self):  # handles and threads are per process: rebuild them after pickling
        args = (self.app_name, self.timeout_s, self.max_retries, self.retry_backoff_s)
        return (RewardClient, args)

    def _handle(self, deployment: str) -> DeploymentHandle:
        if deployment not in self._handles:
            self._handles[deployment] = serve.get_deployment_handle(deployment, self.app_name)
        return self._handles[deployment]

    # ---------------------------------------------------------------- async API

    async def score_images(
        self, model: str, images: torch.Tensor, prompts: list[str]
    ) -> ScoreResult:
        """(N, 3, H, W) float images in [0, 1] (or uint8) and N prompts -> ScoreResult."""
        check_batch(images if images.dtype != torch.uint8 else images.float(), list(prompts))
        ref = ray.put(images.detach().cpu())
        scorer = self._handle(scorer_deployment_name(model))
        return await self._with_retries(
            model, len(prompts), lambda: scorer.score.remote(ref, list(prompts))
        )

    async def score_latents(
        self, model: str, latents: torch.Tensor, prompts: list[str], vae: str
    ) -> ScoreResult:
        """(N, C, h, w) scaled latents, decoded by the service's VAE `vae`, -> ScoreResult."""
        latents = check_latents(latents.detach().cpu())
        if len(latents) != len(prompts):
            raise ValueError(f"got {len(latents)} latents but {len(prompts)} prompts")
        ref = ray.put(latents)
        decoder = self._handle(vae_deployment_name(vae))
        scorer = self._handle(scorer_deployment_name(model))

        def call():  # the decoded images go replica -> replica, never through this process
            return scorer.score.remote(decoder.decode.remote(ref), list(prompts))

        return await self._with_retries(model, len(prompts), call)

    async def _with_retries(
        self, model: str, count: int, call: Callable[[], Awaitable[list[ItemScore]]]
    ) -> ScoreResult:
        reason = "not attempted"
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(backoff_seconds(self.retry_backoff_s, attempt))
            response = call()
            try:
                items = await asyncio.wait_for(_await(response), timeout=self.timeout_s)
                return ScoreResult(model=model, items=list(items))
            except asyncio.TimeoutError:
                response.cancel()
                reason = f"no answer from {model!r} within {self.timeout_s} s"
            except ValueError:
                raise  # the inputs are wrong; retrying cannot help
            except RETRYABLE as err:
                reason = f"{type(err).__name__}: {err}"
        attempts = self.max_retries + 1
        return missing_result(model, count, f"missing after {attempts} attempt(s): {reason}")

    # ---------------------------------------------------------------- sync wrappers

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise RuntimeError("inside an event loop: await the async method instead")
        if self._loop_thread is None:
            self._loop_thread = _LoopThread()
        return self._loop_thread.run(coro)

    def score_images_sync(
        self, model: str, images: torch.Tensor, prompts: list[str]
    ) -> ScoreResult:
        return self._run(self.score_images(model, images, prompts))

    def score_latents_sync(
        self, model: str, latents: torch.Tensor, prompts: list[str], vae: str
    ) -> ScoreResult:
        return self._run(self.score_latents(model, latents, prompts, vae))


async def _await(response: Any) -> Any:
    return await response


def wait_for_app(app_name: str, timeout_s: float = 60.0) -> None:
    """Block until the Serve app `app_name` is RUNNING (ValueError when it failed or timed out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications.get(app_name)
        if status is not None and status.status == "RUNNING":
            return
        if status is not None and status.status == "DEPLOY_FAILED":
            raise ValueError(f"Serve app {app_name!r} failed to deploy: {status.message}")
        time.sleep(0.5)
    raise ValueError(f"Serve app {app_name!r} is not running after {timeout_s} s")
