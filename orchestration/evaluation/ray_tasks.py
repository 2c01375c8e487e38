"""The Ray shell of the evaluation: generation actors, and the scorer app's lifetime.

Generation: `generation.num_workers` actors (EvalWorker, worker.py), each holding its GPU
(or CPUs) for the whole evaluation, so a pipeline is loaded once per actor, not once per
chunk as GPU tasks would (their default max_calls is 1). Chunks go out one per idle actor
and come back in completion order (`ray.util.ActorPool`), so the driver holds at most one
finished chunk per actor however many images the evaluation makes.
Scoring service: when the evaluation scores through handles and the Serve app
`scoring.app_name` is not running, `scorer_service` deploys the configured scorers as that app
(handles only, no VAEs) and deletes it afterwards; an app that was already running is used as
it is and left alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import ray
from ray.util import ActorPool

from orchestration.evaluation.config import EvalConfig, ScoringConfig
from orchestration.evaluation.worker import Chunk, EvalWorker
from reward_service.config import ServeConfig


def stream_chunks(
    cfg: EvalConfig, jobs: list[tuple], reference_size: tuple[int, int] | None
) -> Iterator[Chunk]:
    """Run `jobs` on the actors: ("generate", spec, steps, row, items) or ("reference",
    start, stop); yield each Chunk as it is done."""
    gen = cfg.generation
    device = "cuda" if gen.num_gpus_per_task > 0 else "cpu"
    actor = ray.remote(EvalWorker).options(
        num_cpus=gen.num_cpus_per_task, num_gpus=gen.num_gpus_per_task
    )
    config = cfg.model_dump(mode="json")
    actors = [actor.remote(config, reference_size, device, gen.torch_threads)
              for _ in range(gen.num_workers)]
    try:
        pool = ActorPool(actors)
        yield from pool.map_unordered(lambda a, job: getattr(a, job[0]).remote(*job[1:]), jobs)
    finally:
        for handle in actors:
            ray.kill(handle)


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
