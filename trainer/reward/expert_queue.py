"""A bounded window of asynchronous expert-scoring requests (paper Algorithm 4, R^E off the
critical path).

Each step the latent proxy reward hook submits the triplet latents (z0, z1, z2) of its LRM
subset to the expert and carries on; `collect(step)` returns, without waiting, the requests
whose scores have arrived and the ones that fell out of the window:

    client = RewardClient("rewards", timeout_s=30)
    queue = ExpertQueue(client, "toy-judge", "toy", 4, sync_timeout_s=client.worst_case_s + 5)
    queue.submit(step, triplets, captions)      # (n, 3, C, h, w) detached latents, n captions
    for answer in queue.collect(step): ...      # ExpertAnswer: (n, 3) scores + present mask
    queue.drain(timeout_s)                      # end of training: wait once, resolve the rest

Window: the request made at step s may be used by the LRM update of any step t with
s <= t <= s + max_staleness_steps. If its scores are not in by step s + K it is cancelled and
answered with every item missing ("late"), so at most K + 1 requests are in flight and memory
stays bounded. K = 0 means synchronous: the request is waited for in its own step (up to the
expert client's timeout). Failed calls and per-item errors are missing items too; a missing
item is never given a default score.

Adaptive window (`max_window_steps` > K): the queue measures the expert's round trip (when
each answer arrives; before the first one, the age of a request about to expire, a lower
bound) and the time per step, and sets the window to cover twice the average round trip
(trainer/reward/expert_window.py), between K and `max_window_steps`. An expert whose average
round trip is within about K / 2 steps sees exactly the fixed window.

The expert is anything with `async score_latents(model, latents, prompts, vae) -> ScoreResult`
(`reward_service.client.RewardClient`, or a plain in-process class in tests). Its coroutines
run on a private event-loop thread, so `submit` works from a Ray Train worker's plain thread,
where no event loop runs (docs/method.md §7: never block on `.result()` inside a loop).

With several data-parallel ranks, `agree` (a collective AND over ranks) makes every rank take
the same requests at the same step, so the LRM updates, and their gradient all-reduce, line up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from trainer.reward.expert_window import ema, window_steps

LATE = "late"
TRIPLET = 3  # z0 (real), z1 (online), z2 (target)


class LatentExpert(Protocol):
    """What the queue needs from the expert (reward_service.client.RewardClient has it)."""

    async def score_latents(
        self, model: str, latents: torch.Tensor, prompts: list[str], vae: str
    ) -> Any:  # -> reward_service.client.ScoreResult
        ...

    @property
    def worst_case_s(self) -> float:
        """The longest one `score_latents` call takes before it returns, retries included."""
        ...


@dataclass
class ExpertRequest:
    """One step's request: the stored detached latents the LRM update will be recomputed on."""

    step: int
    triplets: torch.Tensor  # (n, 3, C, h, w) on the CPU: z0, z1, z2
    captions: list[str]  # n
    future: concurrent.futures.Future
    sent_at: float


@dataclass
class ExpertAnswer:
    """A resolved request: expert scores (n, 3) (NaN where missing) and the present mask."""

    step: int
    triplets: torch.Tensor  # (n, 3, C, h, w)
    captions: list[str]
    scores: torch.Tensor  # (n, 3) float32
    present: torch.Tensor  # (n, 3) bool
    reason: str | None  # why items are missing (None when every item has a score)
    latency_s: float

    @property
    def incomplete_triplets(self) -> int:
        """Triplets with at least one missing score (their LRM update is skipped in part)."""
        return int((~self.present).any(dim=1).sum())


def _all_missing(request: ExpertRequest, reason: str, latency_s: float) -> ExpertAnswer:
    n = len(request.captions)
    return ExpertAnswer(
        request.step, request.triplets, request.captions,
        torch.full((n, TRIPLET), float("nan")), torch.zeros(n, TRIPLET, dtype=torch.bool),
        reason, latency_s,
    )


def answer_from_result(request: ExpertRequest, result: Any, latency_s: float) -> ExpertAnswer:
    """A `ScoreResult` of the 3n flattened latents -> (n, 3) scores and mask, item-major."""
    n = len(request.captions)
    if len(result.items) != TRIPLET * n:
        reason = f"expert answered {len(result.items)} items for {TRIPLET * n} latents"
        return _all_missing(request, reason, latency_s)
    scores, present = result.as_tensor()
    reason = result.reason
    if reason is None and not present.all():
        errors = {item.error for item in result.items if item.score is None}
        reason = "; ".join(sorted(str(e) for e in errors))
    return ExpertAnswer(
        request.step, request.triplets, request.captions,
        scores.view(n, TRIPLET), present.view(n, TRIPLET), reason, latency_s,
    )


class ExpertQueue:
    """Non-blocking expert requests with a window of `max_staleness_steps` steps (module doc)."""

    def __init__(
        self,
        expert: LatentExpert,
        model: str,
        vae: str,
        max_staleness_steps: int,
        *,
        sync_timeout_s: float,
        agree: Callable[[list[bool]], list[bool]] | None = None,
        max_window_steps: int | None = None,
        agree_max: Callable[[int], int] | None = None,
    ) -> None:
        if max_staleness_steps < 0:
            raise ValueError(f"max_staleness_steps={max_staleness_steps} must be >= 0")
        self.expert, self.model, self.vae = expert, model, vae
        self.max_staleness_steps = max_staleness_steps
        self.agree = agree or (lambda flags: flags)
        self.sync_timeout_s = sync_timeout_s  # K = 0: longest wait for one request
        self.pending: list[ExpertRequest] = []
        # Adaptive window (module doc); `agree_max` makes every rank use the widest one.
        self.max_window_steps = max(max_staleness_steps, max_window_steps or 0)
        self.agree_max = agree_max or (lambda value: value)
        self.window = self.max_window_seen = max_staleness_steps
        self.round_trip_s: float | None = None  # moving averages (trainer/reward/expert_window.py)
        self.step_s: float | None = None
        self._last_submit: tuple[int, float] | None = None  # (step, monotonic time)
        self._round_trips: list[float] = []  # appended on the event-loop thread
        self._answered = False  # any round trip measured yet
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="expert-queue"
        )
        self._thread.start()

    def submit(self, step: int, triplets: torch.Tensor, captions: list[str]) -> None:
        """Send (n, 3, C, h, w) latents and their n captions to the expert; returns at once."""
        if triplets.ndim != 5 or triplets.shape[1] != TRIPLET:
            raise ValueError(f"triplets must be (n, 3, C, h, w); got {tuple(triplets.shape)}")
        if triplets.shape[0] != len(captions):
            raise ValueError(f"{triplets.shape[0]} triplets but {len(captions)} captions")
        triplets = triplets.detach().float().cpu()
        prompts = [caption for caption in captions for _ in range(TRIPLET)]  # item-major
        coroutine = self.expert.score_latents(
            self.model, triplets.flatten(0, 1), prompts, self.vae
        )
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        sent_at = time.monotonic()
        future.add_done_callback(functools.partial(self._arrived, sent_at))
        self.pending.append(ExpertRequest(step, triplets, list(captions), future, sent_at))
        if self._last_submit is not None and step > self._last_submit[0]:
            per_step = (sent_at - self._last_submit[1]) / (step - self._last_submit[0])
            self.step_s = ema(self.step_s, per_step)
        self._last_submit = (step, sent_at)

    def _arrived(self, sent_at: float, future: concurrent.futures.Future) -> None:
        if not future.cancelled():  # a cancelled request's age is counted when it expires
            self._round_trips.append(time.monotonic() - sent_at)

    @property
    def adaptive(self) -> bool:
        return self.max_window_steps > self.max_staleness_steps > 0

    def _update_window(self, step: int, now: float) -> None:
        """Fold the new round trips (and the ages of requests about to expire, lower bounds
        of theirs) into the averages; the window every rank uses from this step on."""
        arrived, self._round_trips = self._round_trips, []
        for seconds in arrived:
            self.round_trip_s = ema(self.round_trip_s, seconds)
        self._answered = self._answered or bool(arrived)
        local = self._local_window()
        ages = [step - r.step for r in self.pending if not r.future.done()]
        if not self._answered and ages and max(ages) >= local:
            # No answer yet and one about to expire: it needs more than its age, a lower
            # bound of the round trip taken at once (averaged in, the window would grow too
            # slowly to catch an expert several windows slow), in averaged steps so a stale
            # step average cannot hold the window shut. Once answers arrive, they alone set it.
            oldest = max(ages)
            waited = max(now - r.sent_at for r in self.pending if not r.future.done())
            lower = max(waited, (oldest + 1) * (self.step_s or 0.0))
            self.round_trip_s = max(self.round_trip_s or 0.0, lower)
            local = self._local_window()
        self.window = self.agree_max(local)
        self.max_window_seen = max(self.max_window_seen, self.window)

    def _local_window(self) -> int:
        return window_steps(
            self.round_trip_s, self.step_s, self.max_staleness_steps, self.max_window_steps
        )

    def collect(self, step: int) -> list[ExpertAnswer]:
        """Answers usable at `step`: arrived requests, and expired ones (all items missing).

        Never blocks, except with max_staleness_steps = 0 (synchronous mode).
        """
        if self.max_staleness_steps == 0:
            concurrent.futures.wait(
                [r.future for r in self.pending], timeout=self.sync_timeout_s
            )
        if self.adaptive:
            self._update_window(step, time.monotonic())
        # Ranks hold the same requests (same submissions, same decisions): skip when empty.
        arrived = self.agree([r.future.done() for r in self.pending]) if self.pending else []
        taken, kept = [], []
        for request, done in zip(self.pending, arrived, strict=True):
            age = step - request.step
            if done or age >= self.window:
                taken.append(self._resolve(request, too_old=age > self.window))
            else:
                kept.append(request)
        self.pending = kept
        return taken

    def drain(self, timeout_s: float) -> list[ExpertAnswer]:
        """Wait up to `timeout_s` for every in-flight request, then resolve them all."""
        concurrent.futures.wait([r.future for r in self.pending], timeout=timeout_s)
        answers = [self._resolve(request) for request in self.pending]
        self.pending = []
        self._last_submit = None  # the next submit starts a new run of steps
        return answers

    def _resolve(self, request: ExpertRequest, too_old: bool = False) -> ExpertAnswer:
        """This rank's answer: its scores if they are in (and the request is within the
        window; steps that skip numbers can overshoot it), else every item missing (late)."""
        latency = time.monotonic() - request.sent_at
        if too_old or not request.future.done():
            request.future.cancel()
            window = self.window
            return _all_missing(request, f"{LATE}: no scores within {window} step(s)", latency)
        try:
            result = request.future.result()
        except Exception as err:  # a failed call: its items are missing, training goes on
            return _all_missing(request, f"expert call failed: {type(err).__name__}: {err}", latency)
        return answer_from_result(request, result, latency)

    def close(self) -> None:
        """Cancel what is still in flight and stop the event-loop thread."""
        for request in self.pending:
            request.future.cancel()
        self.pending = []
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)
