"""Benchmark: share of skipped LRM updates when 8 train workers ask one reward service.

    python -m orchestration.bench.reward_load [--steps 20] [--time-scale 1.0] [--workers 8]

The VLM-judge recipe (configs/sd21-rglcd-lrm-vlm-judge.yaml) at the paper's scale: every
`lrm.step_seconds` each of 8 workers sends the 3 latents of its `lrm.batch_size` triplets
(8 x 5 x 3 = 120 images, 240 judge chat calls a step) through its own `ExpertQueue` (the
trainer's, with the recipe's staleness window) and the reward service's handles, as the LRM
hook does. A request not answered within the window is dropped and its triplets' LRM
updates are skipped; the figure is skipped triplets / sent triplets.

Two arms, each on a real Serve deployment of the recipe's `serve` section on a local Ray
(loopback): "before", the recipe as it stood (one VAE replica decodes every worker's
latents, one judge replica with max_concurrency 16, `BEFORE`), and "after", the recipe as
it is (each worker decodes its own latents, the judge autoscales). The judge is the real
`vlm-judge` scorer (its call pool, cache and VIEScore parsing) whose chat call, instead of
an HTTP request, waits `call_seconds` (the recipe's figure) and answers fixed scores; the
teacher's VAE is the toy VAE, so decoding costs little here (on a GPU an SD VAE decode of 120
latents a step is what the one replica cannot keep up with). `--time-scale` multiplies step
and call seconds alike (the share depends on their ratio) for a slower machine.
Both arms also print the trainer's capacity warnings for their config (trainer/reward/capacity.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass, field

import ray
import torch
from ray import serve

from orchestration.local_head import free_port
from reward_service.app import build_app, scorer_deployment_name
from reward_service.client import RewardClient, wait_for_app
from reward_service.config import VaeConfig
from reward_service.latents import LatentDecoder
from reward_service.scorers.vlm_judge import PQ_RULES, VlmJudgeScorer
from rglcd.recipes import RECIPES_DIR
from rglcd.toy.paths import TOY_PIPELINE_DIR
from trainer.cluster.ray_connect import connect_ray
from trainer.config import load_trainer_config
from trainer.reward.capacity import capacity_warnings
from trainer.reward.expert_queue import ExpertQueue
from trainer.reward.worker_decode import WorkerDecodedExpert

RECIPE = RECIPES_DIR / "sd21-rglcd-lrm-vlm-judge.yaml"
BEFORE = [  # the recipe's reward service before replicas scaled and workers decoded
    "serve.vaes={teacher: {path: TOY_VAE, other_than_teacher: true, num_cpus: 0.1}}",
    "lrm.decode_on_worker=false",
    "serve.scorers.0.autoscaling=null",
    "serve.scorers.0.max_replicas_per_node=null",
    "serve.scorers.0.max_batch_size=8",
    "serve.scorers.0.scorer_threads=1",
    "serve.scorers.0.options.max_concurrency=16",
]
ARMS = {"before": BEFORE, "after": []}


class LatencyJudge(VlmJudgeScorer):
    """The vlm-judge scorer whose chat call waits `call_seconds` and answers fixed scores."""

    def __init__(self, name: str, options: dict, call_seconds: float) -> None:
        super().__init__(name, options)
        self.call_seconds = call_seconds

    def _chat(self, text: str, image_url: str) -> str:
        time.sleep(self.call_seconds)
        scores = [6, 8] if text == PQ_RULES else [7]
        return json.dumps({"score": scores, "reasoning": "load test"})


@dataclass
class LatencyJudgeFactory:
    """`build_app(..., scorer_factory=...)`: every scorer is a LatencyJudge."""

    call_seconds: float

    def __call__(self, spec):
        return LatencyJudge(spec.name, spec.options, self.call_seconds)


@dataclass
class WorkerTally:
    """Per resolved request: (its step, triplets, triplets skipped, round trip s or None)."""

    requests: list[tuple[int, int, int, float | None]] = field(default_factory=list)
    widest_window: int = 0


def arm_config(overrides: list[str], time_scale: float):
    """The recipe on this machine: toy VAE as the teacher's, no GPUs, judge URL unused."""

    cfg = load_trainer_config(RECIPE, [
        "serve.scorers.0.num_cpus=0.1", "serve.scorers.0.max_replicas_per_node=null",
        "serve.scorers.0.options.base_url=http://127.0.0.1:9/v1",
        *(o.replace("TOY_VAE", str(TOY_PIPELINE_DIR)) for o in overrides),
    ], check_paths=False)
    cfg.lrm.step_seconds = cfg.lrm.step_seconds * time_scale
    judge = cfg.serve.scorer(cfg.lrm.expert)
    judge.call_seconds = judge.call_seconds * time_scale
    return cfg


def deploy(cfg, app_name: str) -> None:
    serve_cfg = cfg.serve.model_copy(deep=True, update={"app_name": app_name})
    factory = LatencyJudgeFactory(cfg.serve.scorer(cfg.lrm.expert).call_seconds)
    serve.run(build_app(serve_cfg, scorer_factory=factory), name=app_name,
              route_prefix=f"/{app_name}")
    wait_for_app(app_name, timeout_s=300)


def worker_expert(cfg, app_name: str, decoder):
    client = RewardClient(app_name, timeout_s=cfg.lrm.request_timeout_s)
    return WorkerDecodedExpert(client, decoder) if cfg.lrm.decode_on_worker else client


def run_worker(cfg, expert, rank: int, steps: int, start: float, shape, tally: WorkerTally):
    """One train worker's expert traffic: submit each step, collect what arrived, then keep
    collecting (no new requests) until every request is answered or left the window."""
    lrm = cfg.lrm
    vae = "" if lrm.decode_on_worker else cfg.expert_vae_name
    queue = ExpertQueue(expert, lrm.expert, vae, lrm.max_staleness_steps,
                        max_window_steps=lrm.max_adaptive_staleness_steps)
    generator = torch.Generator().manual_seed(rank)
    captions = [f"worker {rank} caption {i}" for i in range(lrm.batch_size)]
    step = 0
    while step < steps or queue.pending:
        time.sleep(max(0.0, start + step * lrm.step_seconds - time.monotonic()))
        if step < steps:
            triplets = torch.randn(lrm.batch_size, 3, *shape, generator=generator)
            queue.submit(step, triplets, captions)
        for answer in queue.collect(step):
            latency = answer.latency_s if answer.present.all() else None
            tally.requests.append(
                (answer.step, len(answer.captions), answer.incomplete_triplets, latency))
        tally.widest_window = max(tally.widest_window, queue.window)
        step += 1
    queue.close()


def summary(tallies: list[WorkerTally], first_step: int) -> dict:
    """Skipped share and median round trip of the requests made at `first_step` or later."""
    rows = [r for t in tallies for r in t.requests if r[0] >= first_step]
    sent, skipped = sum(r[1] for r in rows), sum(r[2] for r in rows)
    latencies = sorted(r[3] for r in rows if r[3] is not None)
    return {
        "sent": sent, "skipped": skipped, "skipped_share": skipped / max(sent, 1),
        "median_round_trip_s": latencies[len(latencies) // 2] if latencies else float("nan"),
    }


def run_arm(label: str, cfg, steps: int, workers: int, decoder, warmup: int) -> dict:
    app_name = f"bench-load-{label}"
    deploy(cfg, app_name)
    side = decoder.max_latent_side // 2  # the VAE's trained size (max_size_factor 2)
    shape = (decoder.latent_channels, side, side)
    tallies = [WorkerTally() for _ in range(workers)]
    start = time.monotonic() + 1.0
    threads = [
        threading.Thread(target=run_worker, args=(
            cfg, worker_expert(cfg, app_name, decoder), rank, steps, start, shape, tallies[rank]))
        for rank in range(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    replicas = judge_replicas(app_name, cfg)
    serve.delete(app_name)
    return {
        "arm": label, "all": summary(tallies, 0), "steady": summary(tallies, warmup),
        "widest_window": max(t.widest_window for t in tallies),
        "judge_replicas_at_end": replicas, "seconds": time.monotonic() - start,
        "warnings": capacity_warnings(cfg),
    }


def judge_replicas(app_name: str, cfg) -> int:
    status = serve.status().applications[app_name].deployments
    deployment = status[scorer_deployment_name(cfg.lrm.expert)]
    return sum(deployment.replica_states.values())


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="Steps that send requests.")
    parser.add_argument("--warmup-steps", type=int, default=10,
                        help="Steps whose requests are also reported apart (the autoscaler's "
                        "ramp, which a 10k-step run pays once).")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="Multiplies lrm.step_seconds and the judge's call_seconds.")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    configs = {label: arm_config(ARMS[label], args.time_scale) for label in args.arms}
    first = next(iter(configs.values()))
    connect_ray(first)
    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    decoder = LatentDecoder.from_config(VaeConfig(path=str(TOY_PIPELINE_DIR)))  # workers' VAE
    try:
        for label, cfg in configs.items():
            result = run_arm(label, cfg, args.steps, args.workers, decoder, args.warmup_steps)
            report(result, cfg, args.workers, args.warmup_steps)
    finally:
        ray.shutdown()
    return 0


def report(result: dict, cfg, workers: int, warmup: int) -> None:
    judge = cfg.serve.scorer(cfg.lrm.expert)
    images = workers * cfg.lrm.batch_size * 3
    every, steady = result["all"], result["steady"]
    print(
        f"{result['arm']:>6}: skipped {every['skipped']} of {every['sent']} triplets "
        f"({every['skipped_share']:.1%}); from step {warmup} on {steady['skipped']} of "
        f"{steady['sent']} ({steady['skipped_share']:.1%}), median round trip "
        f"{steady['median_round_trip_s']:.1f} s. {images} images = {2 * images} judge calls "
        f"a step every {cfg.lrm.step_seconds:g} s, call {judge.call_seconds:g} s; decode on "
        f"{'worker' if cfg.lrm.decode_on_worker else 'service'}; judge replicas at end "
        f"{result['judge_replicas_at_end']} (max {judge.most_replicas}, max_concurrency "
        f"{judge.options['max_concurrency']}); widest window {result['widest_window']} steps; "
        f"{result['seconds']:.0f} s"
    )
    for warning in result["warnings"]:
        print(f"        capacity warning: {warning}")


if __name__ == "__main__":
    sys.exit(main())
