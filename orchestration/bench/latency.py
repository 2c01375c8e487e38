"""Expert latency: RG-LCD + LRM with an expert that answers at once vs one that takes 3 s a
call and fails 20% of its calls, side by side in one process.

    python -m orchestration.bench latency [--steps 20] [--delay-s 3] [--failure-rate 0.2]

The arms are those of orchestration/bench/lrm_latency.py (the default recipe's real training
step against a toy-judge expert on Ray Serve, behind `DelayedScorer`), alternated `--rounds`
times. Per arm: steps/s, LRM updates applied, triplets skipped (failed or late), the largest
staleness of an applied update, the widest expert window the queue used and its measured
round trip. Then both arms' LRMs rank the same fixed held-out triplets
(`orchestration.evaluation.lrm_agreement`: real latent, 1- and 2-step samples, judged by the toy
judge; here sampled by the toy teacher, as the bench exports no LCM), beside the pretrained LRM.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from orchestration.bench.lrm_latency import WARMUP_STEPS, bench_config, deploy, run_arm
from orchestration.bench.table import Row
from orchestration.evaluation.lrm_agreement import agreement, held_out_triplets
from orchestration.local_head import free_port
from rglcd.toy.paths import TOY_DATA_DIR, TOY_LRM_DIR, TOY_PIPELINE_DIR
from trainer.cluster.ray_connect import connect_ray
from trainer.loop import Trainer, worker_threads

AGREEMENT_TOLERANCE = 0.02
STEPS_GOAL = 0.95


@dataclass
class Arm:
    label: str
    delay_s: float
    failure_rate: float
    seconds: float = 0.0


def run_arms(args) -> tuple[dict, dict]:
    """{label: Trainer} after the timed steps, {label: Arm}; arms alternate per round."""
    import ray
    from ray import serve

    slow = f"{args.delay_s:g} s, {args.failure_rate:.0%} failing"
    arms = {"0 s": Arm("0 s", 0.0, 0.0), slow: Arm(slow, args.delay_s, args.failure_rate)}
    port = free_port()
    configs = {label: bench_config(f"bench-lrm-{i}", port, [])
               for i, label in enumerate(arms)}
    first = next(iter(configs.values()))
    torch.set_num_threads(worker_threads(first.scaling, os.cpu_count() or 1, 1))
    connect_ray(first)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    trainers = {}
    try:
        for label, cfg in configs.items():
            deploy(cfg, arms[label].delay_s, arms[label].failure_rate)
            trainers[label] = Trainer(cfg, 0, 1, torch.device("cpu"))
            run_arm(trainers[label], WARMUP_STEPS, 0)
        for round_index in range(args.rounds):
            start = WARMUP_STEPS + round_index * args.steps
            for label, trainer in trainers.items():
                arms[label].seconds += run_arm(trainer, args.steps, start)
    finally:
        for cfg in configs.values():
            serve.delete(cfg.serve.app_name)
        ray.shutdown()
    return trainers, arms


def heldout_agreements(trainers: dict, images: int) -> dict[str, float]:
    """Agreement with the toy judge on fixed held-out triplets: pretrained LRM and each arm's."""
    from trainer.lrm import LatentRewardModel  # deferred: loads transformers

    # held_out_triplets reads <run>/pipeline: the toy teacher's folder is <artifacts>/pipeline.
    latents, captions, scores = held_out_triplets(TOY_PIPELINE_DIR.parent, TOY_DATA_DIR,
                                                  images, seed=0)
    lrms = {"pretrained": LatentRewardModel.from_pretrained(TOY_LRM_DIR).eval()}
    lrms.update({label: t.task.reward.lrm.eval() for label, t in trainers.items()})
    return {label: agreement(lrm, latents, captions, scores)["agreement"]
            for label, lrm in lrms.items()}


def run(args):
    """(table rows, markdown details) of the latency benchmark."""
    trainers, arms = run_arms(args)
    steps = args.steps * args.rounds
    agreements = heldout_agreements(trainers, args.heldout)
    (fast, fast_arm), (slow, slow_arm) = arms.items()
    rate = {label: steps / arm.seconds for label, arm in arms.items()}
    lines = [
        f"**Expert latency** (default recipe's training step, {steps} timed steps per arm in "
        f"{args.rounds} alternating rounds; held-out agreement on {args.heldout} triplets, "
        f"pretrained LRM {agreements['pretrained']:.3f})",
        "",
        "| expert | steps/s | LRM updates | triplets skipped | max staleness | window "
        "(widest) | round trip s | held-out agreement |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, trainer in trainers.items():
        hook = trainer.task.reward
        queue = hook.queue
        round_trip = f"{queue.round_trip_s:.2f}" if queue.round_trip_s is not None else "-"
        lines.append(
            f"| {label} | {rate[label]:.3f} | {hook.updates_applied} | {hook.skipped_total} | "
            f"{hook.max_staleness_seen} | {queue.max_staleness_steps} ({queue.max_window_seen}) "
            f"| {round_trip} | {agreements[label]:.3f} |")
    ratio = rate[slow] / rate[fast]
    gap = abs(agreements[slow] - agreements[fast])
    slow_hook = trainers[slow].task.reward
    command = "python -m orchestration.bench latency"
    rows = [
        Row("RG-LCD + LRM steps/s: slow, failing expert vs 0 s",
            f"{rate[slow]:.3f} vs {rate[fast]:.3f} steps/s ({slow}); "
            f"{slow_hook.updates_applied} LRM updates, {slow_hook.skipped_total} triplets "
            "skipped", f"{ratio:.3f}", f">= {STEPS_GOAL}", ratio >= STEPS_GOAL, command),
        Row("LRM-expert agreement, held-out triplets: slow expert vs 0 s",
            f"{agreements[slow]:.3f} vs {agreements[fast]:.3f} "
            f"(pretrained {agreements['pretrained']:.3f})", f"{gap:.3f} apart",
            f"<= {AGREEMENT_TOLERANCE}", gap <= AGREEMENT_TOLERANCE, command),
    ]
    return rows, "\n".join(lines)
