"""RG-LCD + LRM: the latent proxy reward hook with asynchronous expert rewards (paper section
4.2, Algorithm 4; docs/method.md §3).

Per student step t (`DistillationTask` calls the two halves):

  student_reward   R^L(pred, c) with the LRM's parameters detached ("Detach sigma"); the
                   student's loss is L_LCD - beta * mean(R^L). No VAE decode on this path.
  after_step       1. the LRM subset (first `batch_size` items of the local batch): triplet
                      z0 (real), z1 (online), z2 (target), detached, sent to the expert through
                      the reward service, which decodes and scores them; no waiting
                   2. for every earlier request whose scores are in (or that left the window,
                      see trainer/reward/expert_queue.py): recompute the LRM on the stored
                      latents and take one AdamW step on eq. 12 (`kl_preference_loss`, tau_L,
                      tau_E) over the pairs whose two scores are present
                   3. items that are late, failed or missing are skipped and counted
                      (`reward_updates_skipped`, plus a log line); never given a default score
                   4. at `final_step`, wait once (bounded) for what is still in flight

Departures from Algorithm 4, on purpose: sigma's update for step t happens when the expert's
scores arrive (up to `max_staleness_steps` later), on the latents of step t, with the LRM of
that later step, instead of within step t; the wait is hidden behind the student's steps.

Data parallel: every rank holds an LRM copy, initially identical. Each update sums the
ranks' gradients (each rank's loss weighted by its share of the valid pairs, so the step is
that of eq. 12 over all ranks' triplets) and ranks take the same requests at the same step
(`all_ranks_agree`), so the copies stay identical and the student sees one reward.

Metrics: lrm_loss, lrm_expert_agreement (pairs where the LRM, before its update, orders the
two latents like the expert), reward_staleness_steps, lrm_updates, reward_updates_skipped
(triplets with a missing score, summed over ranks), reward_inflight, reward_window_steps
(the expert window in use, trainer/reward/expert_window.py), time_reward_wait, time_lrm_update. lrm_* and staleness appear only on steps that applied an update.
"""

from __future__ import annotations

import functools
import logging
import time

import torch
import torch.distributed as dist
from torch import nn

from reward_service.latents import LatentDecoder
from rglcd import storage
from trainer.lrm import (
    PAIRS,
    LatentRewardModel,
    build_optimizer,
    finetune_groups,
    kl_preference_loss,
    set_trainable,
    trainable_parameters,
)
from trainer.reward.config import LRMConfig
from trainer.reward.expert_queue import ExpertAnswer, ExpertQueue, LatentExpert
from trainer.reward.hooks import RewardContext, RewardHook
from trainer.reward.worker_decode import WorkerDecodedExpert
from trainer.run_outputs.monitoring import SKIPPED_REWARD_UPDATES

logger = logging.getLogger(__name__)

ANSWER_MARGIN_S = 5.0  # a missing result's hop from the client's event loop to this thread
_FIRST = [i for i, _ in PAIRS]
_SECOND = [j for _, j in PAIRS]


# ----------------------------------------------------------------------------- collectives


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_ranks_agree(flags: list[bool], device: torch.device | str = "cpu") -> list[bool]:
    """Element-wise AND of `flags` over data-parallel ranks (identity with one process)."""
    if _world_size() == 1:
        return list(flags)
    values = torch.tensor([int(f) for f in flags], dtype=torch.int32, device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MIN)
    return [bool(v) for v in values.tolist()]


def max_over_ranks(value: int, device: torch.device | str = "cpu") -> int:
    """The largest `value` over ranks (identity with one process): one expert window for all."""
    if _world_size() == 1:
        return value
    values = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return int(values.item())


def sum_over_ranks(values: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """Sum of a small tensor over ranks, as float64 on the CPU (identity with one process).

    `device` is where the collective runs (the LRM's: CUDA for NCCL, CPU for gloo).
    """
    values = values.detach().double()
    if _world_size() > 1:
        values = values.to(device)
        dist.all_reduce(values)
    return values.cpu()


def sum_gradients(parameters: list[nn.Parameter]) -> None:
    """All-reduce (sum) the gradients of `parameters`; a missing gradient counts as zero."""
    if _world_size() == 1:
        return
    for param in parameters:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        dist.all_reduce(param.grad)


# ----------------------------------------------------------------------------- pair statistics


def pair_counts(
    lrm_rewards: torch.Tensor, expert_scores: torch.Tensor, present: torch.Tensor
) -> torch.Tensor:
    """(valid pairs, pairs where LRM and expert agree, pairs with an expert preference).

    Inputs are (n, 3) for (z0, z1, z2); a pair is valid when both expert scores are present
    and counts for agreement when the expert is not tied (as `preference_agreement`).
    """
    valid = present[:, _FIRST] & present[:, _SECOND]  # (n, 3 pairs)
    expert_diff = torch.where(valid, expert_scores[:, _SECOND] - expert_scores[:, _FIRST], 0.0)
    lrm = lrm_rewards.detach()
    lrm_diff = lrm[:, _SECOND] - lrm[:, _FIRST]
    counted = valid & (expert_diff != 0)
    agree = counted & (lrm_diff.sign() == expert_diff.sign())
    return torch.stack([valid.sum(), agree.sum(), counted.sum()]).double()


# ----------------------------------------------------------------------------- the hook


class LatentProxyReward(RewardHook):
    """R^L guides the student; R^L learns from an asynchronous expert (module doc)."""

    name = "lrm"

    def __init__(
        self,
        lrm: LatentRewardModel,
        queue: ExpertQueue,
        config: LRMConfig,
        *,
        beta: float,
        final_step: int | None,
        drain_timeout_s: float,
    ):
        """`config`: the `lrm` section; `beta`: reward.beta; `final_step`: the step whose
        after_step drains the window (None: the caller calls finish())."""
        self.lrm = lrm.eval()
        self.config = config
        self.beta = beta
        self.final_step = final_step
        self.drain_timeout_s = drain_timeout_s
        self.queue = queue
        # The freeze first, then an optimizer that holds only the trainable tensors.
        groups = finetune_groups(
            lrm, config.trainable_latent_blocks, config.trainable_text_blocks
        )
        set_trainable(lrm, groups)
        self.trainable = trainable_parameters(lrm)
        self.optimizer = build_optimizer(lrm, config.learning_rate)
        self.device = lrm.logit_scale.device
        self.updates_applied = 0
        self.skipped_total = 0
        self.max_staleness_seen = 0

    # ---- RewardHook interface ----------------------------------------------------------
    def student_reward(self, context: RewardContext) -> tuple[torch.Tensor, dict[str, float]]:
        tokens = self.lrm.tokenize(context.captions)
        return self.lrm.detached_reward(context.online, **tokens).float(), {}

    def after_step(self, context: RewardContext) -> dict[str, float]:
        n = min(self.config.batch_size, len(context.captions))
        triplets = torch.stack(
            [context.latents[:n], context.online[:n], context.target[:n]], dim=1
        )  # (n, 3, C, h, w)
        self.queue.submit(context.step, triplets.detach(), list(context.captions[:n]))
        start = time.perf_counter()
        answers = self.queue.collect(context.step)
        if self.final_step is not None and context.step >= self.final_step:
            answers += self.queue.drain(self.drain_timeout_s)
        waited = time.perf_counter() - start
        metrics = self.learn(answers, context.step)
        metrics["time_reward_wait"] = waited
        return metrics

    def trainable_state(self) -> tuple[dict[str, nn.Module], dict[str, object]]:
        return {"lrm": self.lrm}, {"lrm_optimizer": self.optimizer}

    # ---- learning from the expert ------------------------------------------------------
    def finish(self) -> dict[str, float]:
        """Drain the window (bounded wait) and learn from what arrived; count the rest."""
        answers = self.queue.drain(self.drain_timeout_s)
        return self.learn(answers, max((a.step for a in answers), default=0))

    def learn(self, answers: list[ExpertAnswer], step: int) -> dict[str, float]:
        """One LRM update per answer, oldest first; the step's metrics (module doc)."""
        start = time.perf_counter()
        skipped = 0
        totals = torch.zeros(4, dtype=torch.float64)  # loss * pairs, pairs, agree, counted
        stalenesses = []
        for answer in sorted(answers, key=lambda a: a.step):
            skipped += self._count_skips(answer, step)
            stats = self._update(answer)
            if stats is not None:
                totals += stats
                stalenesses.append(step - answer.step)
        skipped = int(sum_over_ranks(torch.tensor([float(skipped)]), self.device).item())
        self.skipped_total += skipped
        metrics = {
            SKIPPED_REWARD_UPDATES: float(skipped),
            "reward_inflight": float(len(self.queue.pending)),
            "reward_window_steps": float(self.queue.window),
            "lrm_updates": float(len(stalenesses)),
        }
        if stalenesses:
            self.updates_applied += len(stalenesses)
            self.max_staleness_seen = max(self.max_staleness_seen, *stalenesses)
            metrics["lrm_loss"] = float(totals[0] / totals[1])
            metrics["reward_staleness_steps"] = float(max(stalenesses))
            if totals[3] > 0:
                metrics["lrm_expert_agreement"] = float(totals[2] / totals[3])
        metrics["time_lrm_update"] = time.perf_counter() - start
        return metrics

    def _count_skips(self, answer: ExpertAnswer, step: int) -> int:
        skipped = answer.incomplete_triplets
        if skipped:
            logger.warning(
                "step %d: LRM update from step %d skips %d of %d triplet(s): %s",
                step, answer.step, skipped, len(answer.captions), answer.reason,
            )
        return skipped

    def _update(self, answer: ExpertAnswer) -> torch.Tensor | None:
        """One AdamW step on eq. 12 over all ranks' valid pairs of this request.

        Returns the global (loss * pairs, pairs, agree, counted), or None when no rank had a
        valid pair (then nothing moves). Collective: every rank calls it for the same request.
        """
        n = len(answer.captions)
        tokens = self.lrm.tokenize(answer.captions)
        tokens = {k: v.repeat_interleave(3, dim=0) for k, v in tokens.items()}  # item-major
        latents = answer.triplets.flatten(0, 1).to(self.device)  # (3n, C, h, w)
        lrm_rewards = self.lrm.reward(latents, **tokens).view(n, 3)
        scores, present = answer.scores.to(self.device), answer.present.to(self.device)
        loss = kl_preference_loss(
            lrm_rewards, scores, self.config.tau_l, self.config.tau_e, present,
            self.config.real_image_preference,
        )
        counts = pair_counts(lrm_rewards, scores, present)  # pairs, agree, counted
        local = torch.cat([(loss.detach().double() * counts[0]).view(1).cpu(), counts.cpu()])
        totals = sum_over_ranks(local, self.device)
        if totals[1] == 0:
            return None
        (loss * (counts[0].item() / totals[1].item())).backward()
        sum_gradients(self.trainable)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return totals


def build_lrm_hook(
    cfg, device: torch.device, expert: LatentExpert | None = None, vae=None
) -> LatentProxyReward:
    """The hook a trainer config asks for (`reward.mode=lrm`); `expert` defaults to the
    reward service's handle client for `serve.app_name`. With `lrm.decode_on_worker` the
    teacher's `vae` decodes the expert's latents here (trainer/reward/worker_decode.py)."""
    if expert is None:
        from reward_service.client import RewardClient  # Ray at the edge only

        expert = RewardClient(cfg.serve.app_name, timeout_s=cfg.lrm.request_timeout_s)
    if cfg.lrm.decode_on_worker:
        expert = worker_decoded(cfg, expert, vae)
    lrm_cfg = cfg.lrm
    # A path, pkg:// location or s3:// / gs:// folder, copied once per node into its cache.
    lrm = LatentRewardModel.from_pretrained(storage.local_copy(lrm_cfg.checkpoint)).to(device)
    # The longest synchronous wait: the client's own worst case (every attempt timing out,
    # with its backoff), plus the trip of its missing result back to this thread.
    sync_timeout = expert.worst_case_s + ANSWER_MARGIN_S
    queue = ExpertQueue(
        expert, lrm_cfg.expert, "" if lrm_cfg.decode_on_worker else cfg.expert_vae_name,
        lrm_cfg.max_staleness_steps,
        agree=functools.partial(all_ranks_agree, device=device), sync_timeout_s=sync_timeout,
        max_window_steps=lrm_cfg.max_adaptive_staleness_steps,
        agree_max=functools.partial(max_over_ranks, device=device),
    )
    return LatentProxyReward(
        lrm, queue, lrm_cfg, beta=cfg.reward.beta, final_step=cfg.lcd.max_steps - 1,
        drain_timeout_s=sync_timeout,
    )


def worker_decoded(cfg, expert: LatentExpert, vae) -> LatentExpert:
    if vae is None:
        raise ValueError("lrm.decode_on_worker needs the teacher's VAE on the worker")
    chunk = cfg.reward.decode_chunk_size or 3 * cfg.lrm.batch_size
    return WorkerDecodedExpert(expert, LatentDecoder(vae, chunk_size=chunk))
