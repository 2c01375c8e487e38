"""Reward service: batched vs unbatched throughput of toy-clip under concurrent HTTP clients.

    python -m orchestration.bench service [--clients 32] [--duration 5]

toy-clip is the miniature CLIP behind the same `ClipFamilyScorer` as CLIPScore. A local Ray
serves it alone (no VAE, no other scorer) twice: once with max_batch_size=1 (unbatched) and
once per setting of the sweep max_batch_size x batch_wait_timeout_s. Each run is
`reward_service.loadtest.run_load`: `--clients` loops POSTing one toy scene each to /score
for `--duration` seconds. The unbatched app stays deployed and is measured before, during and
after the sweep; each setting's ratio is over the mean of those runs. The best setting is then
measured again against the unbatched app, alternating, for the headline ratio.

To tell what caps the ratio, the scorer is also timed in this process with no service at all:
`score_items` on one image 32 times vs once on 32 images (what batching saves on the model
alone), and the unbatched service's seconds per request minus the scorer's (what each scorer
call costs outside the model, which batching shares among the requests of a batch).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field

import torch

from orchestration.bench.table import Row
from orchestration.local_head import free_port
from orchestration.paths import REPO_ROOT
from reward_service.config import ServeConfig
from reward_service.loadtest import run_load, toy_request
from rglcd.local_ray import keep_local_ray_on_loopback
from rglcd.toy.scenes import render, sample_scenes

BATCH_SIZES = (8, 16, 32)
WAITS_S = (0.002, 0.01, 0.03)
MODEL = "toy-clip"
SCORER_ONLY_IMAGES = 32


@dataclass
class Setting:
    max_batch_size: int
    batch_wait_timeout_s: float
    requests_per_s: list[float] = field(default_factory=list)
    p50_ms: float = float("nan")

    @property
    def label(self) -> str:
        return f"{self.max_batch_size} / {self.batch_wait_timeout_s * 1000:g} ms"

    @property
    def rate(self) -> float:
        return statistics.mean(self.requests_per_s)


def serve_config(name: str, setting: Setting, max_ongoing_requests: int | None = None):
    """An app serving toy-clip alone with `setting`'s batching."""
    default = ServeConfig().scorer(MODEL)
    spec = default.model_copy(update={"max_batch_size": setting.max_batch_size,
                                      "batch_wait_timeout_s": setting.batch_wait_timeout_s,
                                      "max_ongoing_requests": max_ongoing_requests})
    return ServeConfig(app_name=name, route_prefix=f"/{name}", vaes={},
                       scorers=[spec.model_dump()])


def start_ray(port: int) -> None:
    keep_local_ray_on_loopback()  # before `import ray`
    import ray
    from ray import serve

    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})


def deploy(config) -> None:
    from ray import serve

    from reward_service.app import build_app  # deferred: loads fastapi, ray
    from reward_service.client import wait_for_app  # deferred: loads fastapi, ray

    serve.run(build_app(config), name=config.app_name, route_prefix=config.route_prefix,
              blocking=False)
    wait_for_app(config.app_name, timeout_s=300)


def load(url: str, body: bytes, clients: int, duration_s: float):
    report = asyncio.run(run_load(url, body, 1, clients, duration_s))
    if report.statuses[200] != report.sent:
        raise RuntimeError(f"load test against {url} had failures: {report.summary('run')}")
    return report


@torch.no_grad()
def scorer_only() -> tuple[float, float]:
    """(seconds for one image per call, seconds per image in one call of 32), in process."""
    from reward_service.deployments import build_registered_scorer  # deferred: loads ray

    scorer = build_registered_scorer(ServeConfig().scorer(MODEL))
    scenes = sample_scenes("train", SCORER_ONLY_IMAGES, seed=0)
    images = torch.stack([torch.from_numpy(render(s)).permute(2, 0, 1).float() / 255
                          for s in scenes])
    prompts = [s.caption for s in scenes]
    scorer.score_items(images, prompts)  # warm-up
    best_single, best_batched = float("inf"), float("inf")
    for _ in range(3):  # alternate, keep the best of each: the least disturbed by neighbours
        start = time.perf_counter()
        for i in range(len(prompts)):
            scorer.score_items(images[i : i + 1], prompts[i : i + 1])
        best_single = min(best_single, (time.perf_counter() - start) / len(prompts))
        start = time.perf_counter()
        scorer.score_items(images, prompts)
        best_batched = min(best_batched, (time.perf_counter() - start) / len(prompts))
    return best_single, best_batched


def sweep(args) -> tuple[Setting, list[Setting], Setting, Setting]:
    """(unbatched during the sweep, the sweep's settings, the best one and unbatched
    re-measured head to head).

    The sweep retunes one replica in place (`ScorerDeployment.set_batching`: a redeploy per
    setting costs far more than the runs); its max_ongoing_requests is fixed at twice the
    largest batch. The head-to-head run deploys the best setting as the config would.
    """
    from ray import serve

    from reward_service.app import scorer_deployment_name  # deferred: loads fastapi, ray

    port = free_port()
    root = f"http://127.0.0.1:{port}"
    body = toy_request(MODEL, 1)
    start_ray(port)
    unbatched, settings = Setting(1, 0.0), [Setting(b, w) for b in BATCH_SIZES for w in WAITS_S]
    try:
        deploy(serve_config("unbatched", unbatched))
        deploy(serve_config("sweep", settings[0], 2 * max(BATCH_SIZES)))
        scorer = serve.get_deployment_handle(scorer_deployment_name(MODEL), app_name="sweep")
        checkpoints = {0, len(settings) // 2, len(settings)}  # unbatched before, during, after
        for index, setting in enumerate([*settings, None]):
            if index in checkpoints:
                unbatched.requests_per_s.append(
                    load(f"{root}/unbatched/score", body, args.clients, args.duration).requests_per_s)
            if setting is None:
                break
            scorer.set_batching.remote(setting.max_batch_size,
                                       setting.batch_wait_timeout_s).result()
            report = load(f"{root}/sweep/score", body, args.clients, args.duration)
            setting.requests_per_s.append(report.requests_per_s)
            setting.p50_ms = report.percentile_ms(0.5)
        serve.delete("sweep")
        best = max(settings, key=lambda s: s.rate)
        final, final_unbatched = Setting(best.max_batch_size, best.batch_wait_timeout_s), \
            Setting(1, 0.0)
        deploy(serve_config("best", final))
        for _ in range(args.rounds):  # alternate: both arms see the same neighbours
            for setting, name in ((final, "best"), (final_unbatched, "unbatched")):
                report = load(f"{root}/{name}/score", body, args.clients, args.duration)
                setting.requests_per_s.append(report.requests_per_s)
                setting.p50_ms = report.percentile_ms(0.5)
        return unbatched, settings, final, final_unbatched
    finally:
        import ray

        ray.shutdown()


def run(args):
    """(table rows, markdown details) of the service benchmark."""
    unbatched, settings, best, best_unbatched = sweep(args)
    single_s, batched_s = scorer_only()
    ratio = best.rate / best_unbatched.rate
    outside_ms = 1000 * (1 / unbatched.rate - single_s)
    lines = [
        f"**Reward service sweep** (toy-clip alone, {args.clients} clients, "
        f"{args.duration:g} s a run; unbatched = max_batch_size 1: "
        f"{' / '.join(f'{r:.1f}' for r in unbatched.requests_per_s)} requests/s)",
        "",
        "| max_batch_size / wait | requests/s | vs unbatched | p50 ms |",
        "|---|---|---|---|",
    ]
    for s in settings:
        lines.append(f"| {s.label} | {s.rate:.1f} | {s.rate / unbatched.rate:.2f}x | "
                     f"{s.p50_ms:.0f} |")
    lines += [
        "",
        f"Scorer alone in one process: {1000 * single_s:.2f} ms for one image per call, "
        f"{1000 * batched_s:.2f} ms per image in a call of {SCORER_ONLY_IMAGES} "
        f"({single_s / batched_s:.1f}x: what batching saves on the model). Through the "
        f"service (1 / throughput): {1000 / unbatched.rate:.1f} ms per request unbatched, {outside_ms:.1f} ms "
        f"of it outside the scorer call; {1000 / best.rate:.1f} ms batched ({best.label}). "
        "A ratio above the scorer's own says batching mostly saves the service's cost per "
        "scorer call (Serve's routing and queueing to a replica that takes 2 x max_batch_size "
        "requests at a time, the executor hop), not model compute.",
    ]
    row = Row(
        benchmark="reward service: batched vs max_batch_size=1 (toy-clip)",
        figure=f"{best.rate:.1f} vs {best_unbatched.rate:.1f} requests/s, {args.clients} clients, "
               f"best setting {best.label}",
        ratio=f"{ratio:.2f}x",
        goal=">= 5x",
        passed=ratio >= 5.0,
        command="python -m orchestration.bench service",
    )
    return [row], "\n".join(lines)
