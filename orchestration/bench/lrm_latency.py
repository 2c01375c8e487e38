"""Benchmark: does the asynchronous expert hide its latency? RG-LCD + LRM steps/s with an
expert that answers at once vs one that takes `--delay-ms` longer per scoring batch.

    python -m orchestration.bench.lrm_latency [--steps 20] [--delay-ms 300] [--rounds 2] \
        [--failure-rate 0.2] [key.sub=value ...]

Two reward-service apps are deployed on a local Ray instance (or RAY_ADDRESS): the toy judge
as is, and the toy judge behind `DelayedScorer`, which sleeps before each batch it scores
(max_batch_size is raised so that a triplet request is never split and the requests queued
behind a slow call share the next one, as a judge API takes concurrent requests) and,
with `--failure-rate`, answers that share of its calls with an error for every item (drawn
from a seeded RNG: the same calls fail on every run). Each
arm runs the real training step of the default recipe (`trainer.loop.Trainer.train_step`: toy
student forward/backward, LRM reward, LRM updates from the expert's answers) in this
process on toy batches; arms alternate `--rounds` times to even out machine noise. Prints
steps/s per arm, their ratio, the largest staleness of an applied LRM update, and skipped
triplets. The issue's target: <= 10% fewer steps/s at 300 ms, staleness within the window.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from dataclasses import dataclass

import torch

from orchestration.local_head import free_port
from reward_service.scorers.base import ItemScore, Scorer
from rglcd.recipes import DEFAULT_RECIPE
from trainer.cluster.ray_connect import connect_ray
from trainer.config import load_trainer_config
from trainer.data import DataPosition, LocalBatch
from trainer.loop import Trainer, worker_threads

WARMUP_STEPS = 3
# A judge API answers concurrent calls: the delayed calls overlap instead of queueing.
EXPERT_THREADS = 16


class DelayedScorer(Scorer):
    """A scorer that answers `delay_s` later on the service path (an injected expert latency)
    and fails a `failure_rate` share of its calls (every item an error, as a judge API that
    times out or answers garbage), chosen by an RNG seeded `seed`."""

    def __init__(
        self, inner: Scorer, delay_s: float, failure_rate: float = 0.0, seed: int = 0
    ) -> None:
        if not 0 <= failure_rate <= 1:
            raise ValueError(f"failure_rate={failure_rate} must be in [0, 1]")
        self.inner, self.delay_s, self.failure_rate = inner, delay_s, failure_rate
        self.name, self.input_size = inner.name, inner.input_size
        self.differentiable = inner.differentiable
        self.rng = random.Random(seed)
        self.calls = self.failed_calls = 0

    def __call__(self, images, prompts):
        return self.inner(images, prompts)

    def score_items(self, images, prompts):
        time.sleep(self.delay_s)
        self.calls += 1
        # Per-item errors rather than an exception: the deployment retries a raising call job
        # by job, which would pay the delay again and draw again.
        if self.rng.random() < self.failure_rate:
            self.failed_calls += 1
            error = f"injected failure (call {self.calls})"
            return [ItemScore(score=None, error=error) for _ in prompts]
        return self.inner.score_items(images, prompts)


@dataclass
class DelayedScorerFactory:
    """`build_app(..., scorer_factory=...)`: the registry's scorer behind DelayedScorer."""

    delay_s: float
    failure_rate: float = 0.0
    seed: int = 0

    def __call__(self, spec) -> Scorer:
        from reward_service.deployments import build_registered_scorer  # deferred: loads ray

        inner = build_registered_scorer(spec)
        return DelayedScorer(inner, self.delay_s, self.failure_rate, self.seed)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="Timed steps per arm and round.")
    parser.add_argument("--delay-ms", type=float, default=300.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--failure-rate", type=float, default=0.0,
                        help="Share of the delayed expert's calls that fail.")
    parser.add_argument("overrides", nargs="*", help="Trainer config key.sub=value overrides.")
    return parser.parse_args(argv)


def bench_config(app: str, port: int, overrides):
    return load_trainer_config(
        DEFAULT_RECIPE,  # what `python trainer/run.py` runs: RG-LCD + LRM, toy-judge expert
        [
            f"serve.app_name={app}",
            f"serve.route_prefix=/{app}",
            f"serve.port={port}",
            "lcd.max_steps=100000",  # no end-of-run drain inside the timed steps
            *overrides,
        ],
    )


def deploy(cfg, delay_s: float, failure_rate: float = 0.0) -> None:
    """The app of `cfg` with only the expert scorer (unsplit batches) behind the delay."""
    from ray import serve

    from reward_service.app import build_app  # deferred: loads fastapi, ray
    from reward_service.client import wait_for_app  # deferred: loads fastapi, ray

    serve_cfg = cfg.serve.model_copy(deep=True)
    expert = serve_cfg.scorer(cfg.lrm.expert).model_copy(update={"max_batch_size": 4096, "scorer_threads": EXPERT_THREADS})
    serve_cfg.scorers = [expert]
    factory = DelayedScorerFactory(delay_s, failure_rate, seed=cfg.seed)
    app = build_app(serve_cfg, scorer_factory=factory)
    serve.run(app, name=cfg.serve.app_name, route_prefix=cfg.serve.route_prefix)
    wait_for_app(cfg.serve.app_name, timeout_s=300)


def toy_batches(trainer, count: int, start: int):
    """`count` LocalBatches of toy scenes encoded by the teacher's VAE (fixed seeds)."""
    from rglcd.toy.data import ensure_toy_dataset, read_toy_images  # deferred: loads pyarrow

    cfg = trainer.cfg
    ensure_toy_dataset(cfg.train_data_path, "train", 2048, seed=0)
    images, captions = read_toy_images(cfg.train_data_path, "train")
    batch, vae = cfg.per_worker_batch_size, trainer.task.teacher.vae
    generator = torch.Generator().manual_seed(cfg.seed)
    for step in range(start, start + count):
        rows = torch.randint(len(captions), (batch,), generator=generator)
        pixels = torch.from_numpy(images[rows.numpy()]).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
        keys = rows + 10_000 * step
        yield LocalBatch(latents, [captions[i] for i in rows.tolist()], keys, DataPosition())


def run_arm(trainer, steps: int, start: int) -> float:
    """Seconds for `steps` consecutive training steps from an empty window; afterwards
    (untimed) the window is drained, so this arm's requests do not load the next arm."""
    batches = list(toy_batches(trainer, steps, start))
    begin = time.perf_counter()
    for offset, batch in enumerate(batches):
        trainer.train_step(batch, start + offset)
    seconds = time.perf_counter() - begin
    trainer.task.reward.finish()
    return seconds


def main(argv=None) -> int:
    import ray
    from ray import serve

    args = parse_args(argv)
    delays = {"0 ms": 0.0, f"{args.delay_ms:g} ms": args.delay_ms / 1000}
    port = free_port()
    configs = {
        label: bench_config(f"bench-lrm-{i}", port, args.overrides)
        for i, label in enumerate(delays)
    }
    first = next(iter(configs.values()))
    # The threads a training worker of this recipe would use (trainer/loop.py).
    torch.set_num_threads(worker_threads(first.scaling, os.cpu_count() or 1, 1))
    connect_ray(first)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    trainers, seconds = {}, dict.fromkeys(delays, 0.0)
    try:
        for label, cfg in configs.items():
            deploy(cfg, delays[label], args.failure_rate if delays[label] else 0.0)
            trainers[label] = Trainer(cfg, 0, 1, torch.device("cpu"))
            run_arm(trainers[label], WARMUP_STEPS, 0)
        for round_index in range(args.rounds):  # each arm's steps stay consecutive
            start = WARMUP_STEPS + round_index * args.steps
            for label, trainer in trainers.items():
                seconds[label] += run_arm(trainer, args.steps, start)
        report(trainers, seconds, args.steps * args.rounds)
    finally:
        for cfg in configs.values():
            serve.delete(cfg.serve.app_name)
        ray.shutdown()
    return 0


def report(trainers, seconds, steps: int) -> None:
    rates = {label: steps / s for label, s in seconds.items()}
    (fast_label, fast), (slow_label, slow) = rates.items()
    window = next(iter(trainers.values())).cfg.lrm.max_staleness_steps
    for label, trainer in trainers.items():
        hook = trainer.task.reward
        print(
            f"expert delay {label:>7}: {rates[label]:.3f} steps/s over {steps} steps, "
            f"LRM updates {hook.updates_applied}, max staleness {hook.max_staleness_seen} "
            f"(window {window}), skipped triplets {hook.skipped_total}"
        )
    print(f"steps/s ratio {slow_label} / {fast_label}: {slow / fast:.3f} "
          f"({100 * (1 - slow / fast):+.1f}% slower)")


if __name__ == "__main__":
    sys.exit(main())
