"""The LRM reward hook and its window of asynchronous expert requests (trainer/reward/lrm_hook.py,
trainer/reward/expert_queue.py) against an in-process expert whose answers the test releases.

No network and no Ray cluster: `ControlledExpert` honours RewardClient's async
`score_latents(model, latents, prompts, vae) -> ScoreResult` and answers when told to.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import threading
import time
from dataclasses import dataclass, field

import pytest
import torch

from reward_service.client import ScoreResult
from reward_service.scorers.base import ItemScore
from rglcd.configuration import ConfigError
from rglcd.toy.paths import TOY_LRM_DIR
from trainer.config import load_trainer_config
from trainer.loop import _carry_counters
from trainer.lrm import LatentRewardModel, kl_preference_loss, preference_agreement
from trainer.reward.config import LRMConfig
from trainer.reward.expert_queue import ExpertQueue
from trainer.reward.hooks import RewardContext
from trainer.reward.lrm_hook import ANSWER_MARGIN_S, LatentProxyReward, build_lrm_hook, pair_counts

CAPTIONS = [
    "a large red circle on a blue background",
    "a small yellow square on a black background",
    "a large green triangle on a white background",
]


def expert_scores(latents: torch.Tensor) -> list[float]:
    """The fake expert's rule: prefers latents of small energy (any fixed rule would do)."""
    return (-(latents**2).mean(dim=(1, 2, 3))).tolist()


@dataclass
class Call:
    latents: torch.Tensor
    prompts: list[str]
    released: threading.Event = field(default_factory=threading.Event)
    missing: tuple[int, ...] = ()
    error: Exception | None = None


class ControlledExpert:
    """Async expert with RewardClient's interface; each call waits for `release(i)`."""

    def __init__(self, auto: bool = False) -> None:
        self.calls: list[Call] = []
        self.auto = auto  # answer at once

    async def score_latents(self, model, latents, prompts, vae) -> ScoreResult:
        call = Call(latents.clone(), list(prompts))
        self.calls.append(call)
        while not (self.auto or call.released.is_set()):
            await asyncio.sleep(0.001)
        if call.error is not None:
            raise call.error
        items = [
            ItemScore(score=None, error="unreadable") if i in call.missing else ItemScore(s)
            for i, s in enumerate(expert_scores(call.latents))
        ]
        return ScoreResult(model=model, items=items)

    def started(self, index: int, timeout_s: float = 10.0) -> Call:
        """Call `index`, once the queue's event-loop thread has started it."""
        deadline = time.monotonic() + timeout_s
        while len(self.calls) <= index and time.monotonic() < deadline:
            time.sleep(0.001)
        return self.calls[index]

    def release(self, index: int, missing=(), error: Exception | None = None) -> None:
        call = self.started(index)
        call.missing, call.error = tuple(missing), error
        call.released.set()


def settle(queue: ExpertQueue, steps) -> None:
    """Wait until the requests of `steps` have been answered (released calls finish fast)."""
    futures = [r.future for r in queue.pending if r.step in steps]
    concurrent.futures.wait(futures, timeout=10)
    assert all(f.done() for f in futures)


def make_hook(
    expert, staleness: int, final_step=None, lr=1e-3, max_window_steps=None
) -> LatentProxyReward:
    torch.manual_seed(0)
    lrm = LatentRewardModel.from_pretrained(TOY_LRM_DIR)
    queue = ExpertQueue(expert, "judge", "toy", staleness, sync_timeout_s=10,
                        max_window_steps=max_window_steps)
    config = LRMConfig(batch_size=2, learning_rate=lr)
    return LatentProxyReward(
        lrm, queue, config, beta=1.0, final_step=final_step, drain_timeout_s=10
    )


def context(step: int, batch: int = 3) -> RewardContext:
    generator = torch.Generator().manual_seed(step)
    z0, online, target = torch.randn(3, batch, 4, 8, 8, generator=generator)
    return RewardContext(z0, online, target, CAPTIONS[:batch], step)


def weights(hook: LatentProxyReward) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in hook.lrm.named_parameters()}


def changed(before: dict, hook: LatentProxyReward) -> set[str]:
    return {k for k, v in hook.lrm.named_parameters() if not torch.equal(v, before[k])}


def test_in_order_arrivals_update_the_trainable_lrm_parts_only():
    expert = ControlledExpert()
    hook = make_hook(expert, staleness=2)
    trainable = {k for k, p in hook.lrm.named_parameters() if p.requires_grad}
    before = weights(hook)

    first = hook.after_step(context(0))  # sent, not answered: nothing to learn yet
    assert first["lrm_updates"] == 0 and first["reward_inflight"] == 1
    assert "lrm_loss" not in first and not changed(before, hook)
    call = expert.started(0)  # submitted without waiting: the call starts on another thread
    assert len(call.prompts) == 6  # 2 triplets x (z0, z1, z2), item-major
    torch.testing.assert_close(call.latents[1], context(0).online[0])

    expert.release(0)
    settle(hook.queue, [0])
    second = hook.after_step(context(1))
    assert second["lrm_updates"] == 1 and second["reward_staleness_steps"] == 1
    assert second["reward_inflight"] == 1 and second["reward_updates_skipped"] == 0
    assert second["lrm_loss"] > 0 and 0 <= second["lrm_expert_agreement"] <= 1
    assert changed(before, hook) == trainable  # the freeze holds: frozen tensors unmoved
    assert "latent_tower.blocks.0.attn.qkv.weight" not in trainable


def test_out_of_order_arrivals_are_applied_when_they_arrive():
    expert = ControlledExpert()
    hook = make_hook(expert, staleness=3)
    hook.after_step(context(0))
    hook.after_step(context(1))
    expert.release(1)  # step 1's scores overtake step 0's
    settle(hook.queue, [1])
    metrics = hook.after_step(context(2))
    assert (metrics["lrm_updates"], metrics["reward_staleness_steps"]) == (1, 1)
    assert [r.step for r in hook.queue.pending] == [0, 2]
    expert.release(0)
    settle(hook.queue, [0])
    metrics = hook.after_step(context(3))
    assert (metrics["lrm_updates"], metrics["reward_staleness_steps"]) == (1, 3)
    assert hook.updates_applied == 2 and hook.skipped_total == 0


def test_scores_later_than_the_window_are_skipped_and_counted_not_filled():
    expert = ControlledExpert()
    hook = make_hook(expert, staleness=1)
    before = weights(hook)
    hook.after_step(context(0))
    metrics = hook.after_step(context(1))  # step 0 leaves the window unanswered
    assert metrics["reward_updates_skipped"] == 2 and metrics["lrm_updates"] == 0
    assert [r.step for r in hook.queue.pending] == [1]  # bounded: at most K + 1 in flight
    expert.release(0)  # too late: nobody uses it
    expert.release(1)
    settle(hook.queue, [1])
    metrics = hook.after_step(context(2))
    assert metrics["lrm_updates"] == 1 and metrics["reward_updates_skipped"] == 0
    assert hook.skipped_total == 2 and changed(before, hook)


def test_missing_items_are_masked_out_of_eq12():
    expert = ControlledExpert()
    hook = make_hook(expert, staleness=2)
    reference = copy.deepcopy(hook.lrm)
    ctx = context(0)
    hook.after_step(ctx)
    expert.release(0, missing=[1])  # triplet 0 lacks z1's score: only its pair (0, 2) counts
    settle(hook.queue, [0])
    metrics = hook.after_step(context(1))

    triplets = torch.stack([ctx.latents[:2], ctx.online[:2], ctx.target[:2]], dim=1)
    scores = torch.tensor(expert_scores(triplets.flatten(0, 1))).view(2, 3)
    present = torch.ones(2, 3, dtype=torch.bool)
    present[0, 1] = False
    with torch.no_grad():
        prompts = [c for c in CAPTIONS[:2] for _ in range(3)]
        lrm_rewards = reference.reward(triplets.flatten(0, 1), prompts=prompts).view(2, 3)
    expected = kl_preference_loss(lrm_rewards, scores, 0.01, 0.01, present)
    filled = kl_preference_loss(lrm_rewards, torch.where(present, scores, 0.0), 0.01, 0.01)
    assert metrics["lrm_loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert abs(filled.item() - expected.item()) > 1e-3  # a default score would show
    assert metrics["reward_updates_skipped"] == 1 and metrics["lrm_updates"] == 1


def test_failed_call_and_all_missing_answer_skip_without_moving_the_lrm():
    expert = ControlledExpert()
    hook = make_hook(expert, staleness=2)
    before = weights(hook)
    hook.after_step(context(0))
    hook.after_step(context(1))
    expert.release(0, error=RuntimeError("replica lost"))
    expert.release(1, missing=range(6))
    settle(hook.queue, [0, 1])
    metrics = hook.after_step(context(2))
    assert metrics["reward_updates_skipped"] == 4 and metrics["lrm_updates"] == 0
    assert not changed(before, hook)


def test_synchronous_mode_and_final_drain_leave_nothing_in_flight():
    hook = make_hook(ControlledExpert(auto=True), staleness=0)
    metrics = hook.after_step(context(0))  # K = 0: wait for this step's own scores
    assert metrics["lrm_updates"] == 1 and metrics["reward_staleness_steps"] == 0

    expert = ControlledExpert()
    hook = make_hook(expert, staleness=5, final_step=1)
    hook.after_step(context(0))
    timer = threading.Timer(0.2, lambda: [expert.release(i) for i in range(2)])
    timer.start()
    metrics = hook.after_step(context(1))  # the last step drains the window (bounded wait)
    timer.join()
    assert metrics["lrm_updates"] == 2 and metrics["reward_inflight"] == 0
    assert metrics["time_reward_wait"] >= 0.1


def test_student_reward_is_the_detached_lrm_on_the_online_latents():
    hook = make_hook(ControlledExpert(), staleness=1)
    ctx = context(0)
    online = ctx.online.clone().requires_grad_(True)
    rewards, _ = hook.student_reward(RewardContext(ctx.latents, online, ctx.target, ctx.captions, 0))
    torch.testing.assert_close(rewards, hook.lrm.reward(ctx.online, prompts=ctx.captions))
    rewards.sum().backward()
    assert online.grad is not None and online.grad.abs().sum() > 0
    assert all(p.grad is None for p in hook.lrm.parameters())
    modules, optimizers = hook.trainable_state()
    assert modules == {"lrm": hook.lrm} and optimizers == {"lrm_optimizer": hook.optimizer}


def test_counters_of_unlogged_steps_reach_the_next_logged_row():
    carried: dict[str, float] = {}
    for skipped in (2.0, 0.0, 3.0):
        row = {"reward_updates_skipped": skipped, "loss": 1.0}
        _carry_counters(row, carried)
    assert row == {"reward_updates_skipped": 5.0, "loss": 1.0}


def test_pair_counts_agree_with_preference_agreement():
    generator = torch.Generator().manual_seed(0)
    lrm_rewards, scores = torch.randn(2, 5, 3, generator=generator)
    scores[0, 2] = scores[0, 1]  # an expert tie carries no preference
    present = torch.rand(5, 3, generator=generator) > 0.2
    valid, agree, counted = pair_counts(lrm_rewards, torch.where(present, scores, 0.0), present)
    expected = preference_agreement(lrm_rewards, torch.where(present, scores, 0.0), present)
    assert counted <= valid and agree / counted == pytest.approx(expected.item())


def test_expert_vae_must_name_a_served_vae():
    cfg = load_trainer_config(None, ["reward.beta=1"], check_paths=False)
    assert cfg.expert_vae_name == "toy"  # the only entry of serve.vaes
    with pytest.raises(ConfigError, match="lrm.expert_vae='sd' is not in serve.vaes"):
        load_trainer_config(None, ["reward.beta=1", "lrm.expert_vae=sd"], check_paths=False)


def test_an_answer_collected_beyond_the_window_is_late_even_if_it_arrived():
    expert = ControlledExpert()
    hook = make_hook(expert, staleness=2)
    hook.after_step(context(0))
    expert.release(0)
    settle(hook.queue, [0])
    metrics = hook.after_step(context(5))  # steps that skip numbers (e.g. interleaved runs)
    assert metrics["lrm_updates"] == 0 and metrics["reward_updates_skipped"] == 2


def test_an_adaptive_window_that_need_not_grow_applies_the_fixed_windows_updates():
    # Each request is answered before the next step is submitted: the measured round trip is
    # under a step, so the adaptive window stays at K and every update is the fixed window's.
    results = []
    for max_window in (None, 32):
        expert = ControlledExpert()
        hook = make_hook(expert, staleness=4, max_window_steps=max_window)
        rows = []
        for step in range(6):
            rows.append(hook.after_step(context(step)))
            expert.release(step)
            settle(hook.queue, [step])
        results.append((weights(hook), [r["lrm_updates"] for r in rows], hook.queue.window))
    (fixed, fixed_updates, _), (adaptive, adaptive_updates, window) = results
    assert window == 4 and fixed_updates == adaptive_updates == [0.0] + [1.0] * 5
    assert all(torch.equal(fixed[k], adaptive[k]) for k in fixed)


def test_the_trainer_waits_as_long_as_the_client_can_take():
    """The synchronous wait and the final drain derive from the client's own worst case:
    every attempt times out, with the backoff sleeps between them."""
    from reward_service.client import RewardClient, worst_case_seconds

    assert worst_case_seconds(30.0, 2, 0.5) == 3 * 30.0 + 0.5 + 1.0
    assert worst_case_seconds(2.0, 0, 0.5) == 2.0
    client = RewardClient("rewards", timeout_s=7.0, max_retries=3, retry_backoff_s=0.25)
    assert client.worst_case_s == 4 * 7.0 + 0.25 + 0.5 + 1.0

    class SlowExpert(ControlledExpert):
        worst_case_s = 123.0

    cfg = load_trainer_config(None, ["reward.beta=1", "lcd.max_steps=5"], check_paths=False)
    hook = build_lrm_hook(cfg, torch.device("cpu"), SlowExpert())
    assert hook.queue.sync_timeout_s == 123.0 + ANSWER_MARGIN_S
    assert hook.drain_timeout_s == 123.0 + ANSWER_MARGIN_S and hook.final_step == 4
