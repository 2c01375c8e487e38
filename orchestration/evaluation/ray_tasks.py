"""The Ray shell of the evaluation: generation as Ray tasks, and the scorer app's lifetime.

Generation: one task per (table row, seed, chunk of prompts); a worker process keeps the last
few pipelines it loaded (generation.load_pipeline), so tasks of one model reuse them.
Scoring service: when the evaluation scores through handles and the Serve app
`scoring.app_name` is not running, `scorer_service` deploys the configured scorers as that app
(handles only, no VAEs) and deletes it afterwards; an app that was already running is used as
it is and left alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import ray
import torch

from orchestration.evaluation.config import EvalConfig, ModelSpec, ScoringConfig, row_label
from orchestration.evaluation.generation import sample_seed, timed_generate
from reward_service.config import ServeConfig


@ray.remote
def _generate_chunk(
    spec: dict, steps: int, prompts: list[str], seeds: list[int], device: str, threads: int
) -> tuple[np.ndarray, float]:
    torch.set_num_threads(threads)  # oversubscribed CPUs slow down badly with more threads
    return timed_generate(ModelSpec.model_validate(spec), steps, prompts, seeds, device)


def generate_all(
    cfg: EvalConfig, prompts: list[str]
) -> dict[str, tuple[np.ndarray, float]]:
    """Images of every row: label -> ((S*P, H, W, 3) uint8, seconds per image).

    Item k = s*P + p is prompt p with seed cfg.seeds[s], from the same initial noise in every
    row (generation.sample_seed).
    """
    gen = cfg.generation
    task = _generate_chunk.options(num_cpus=gen.num_cpus_per_task, num_gpus=gen.num_gpus_per_task)
    device = "cuda" if gen.num_gpus_per_task > 0 else "cpu"
    item_prompts = [p for _ in cfg.seeds for p in prompts]
    item_seeds = [sample_seed(seed, i) for seed in cfg.seeds for i in range(len(prompts))]
    refs: dict[str, list] = {}
    for spec, steps in cfg.rows():
        spec_data = spec.model_dump()
        refs[row_label(spec.name, steps)] = [
            task.remote(
                spec_data, steps, item_prompts[i : i + gen.batch_size],
                item_seeds[i : i + gen.batch_size], device, gen.torch_threads,
            )
            for i in range(0, len(item_prompts), gen.batch_size)
        ]
    out = {}
    for label, chunk_refs in refs.items():
        chunks = ray.get(chunk_refs)
        images = np.concatenate([images for images, _ in chunks])
        out[label] = (images, sum(seconds for _, seconds in chunks) / len(images))
    return out


def _app_running(app_name: str) -> bool:
    from ray import serve

    status = serve.status().applications.get(app_name)
    return status is not None and status.status == "RUNNING"


@contextlib.contextmanager
def scorer_service(cfg: ScoringConfig) -> Iterator[None]:
    """Make sure the scorer app is up for handle scoring (see module docstring)."""
    if cfg.mode != "service" or cfg.url is not None or _app_running(cfg.app_name):
        yield
        return
    if not cfg.deploy:
        raise ValueError(
            f"Serve app {cfg.app_name!r} is not running; start the reward service with those "
            "scorers, set scoring.deploy=true, or use scoring.mode=in-process"
        )
    from ray import serve

    from reward_service.app import build_app  # deferred: loads fastapi
    from reward_service.client import wait_for_app  # deferred: loads fastapi

    serve_cfg = ServeConfig(
        app_name=cfg.app_name, route_prefix=f"/{cfg.app_name}", vaes={}, scorers=cfg.scorers
    )
    serve.start(proxy_location="Disabled")  # no-op (a log line) when Serve already runs
    serve.run(build_app(serve_cfg), name=cfg.app_name, route_prefix=serve_cfg.route_prefix)
    try:
        wait_for_app(cfg.app_name, timeout_s=cfg.timeout_s)
        yield
    finally:
        serve.delete(cfg.app_name)
