"""Load test of POST /score: N concurrent HTTP clients for T seconds, loopback only.

    python -m reward_service.loadtest --serve --clients 32 --duration 10 --compare-unbatched
    python -m reward_service.loadtest --url http://127.0.0.1:8000 --model toy-judge

Prints requests/s, images/s, p50/p99 latency, answers by HTTP status, items answered with a
null score, and lost requests (sent, never answered: connection error or client timeout).
`--serve` starts a local Ray and the app itself (config from --config and `serve.key=value`
overrides); otherwise the app must be running at --url. `--compare-unbatched` deploys the same
scorer once more with `max_batch_size=1` as app `<app>-unbatched` at `/unbatched` (needs
`--serve`, or RAY_ADDRESS and the app's --config), repeats the run against it and prints the
batched/unbatched throughput ratio. Requests are toy scenes with their captions. The clients
share the machine with the service, so on a small machine they take CPU from it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlparse

import httpx
import torch

from reward_service.config import ServeConfig
from rglcd import codecs
from rglcd.toy.scenes import render, sample_scenes

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_CLIENTS, MAX_DURATION_S = 256, 300.0


@dataclass
class LoadReport:
    duration_s: float = 0.0
    images_per_request: int = 1
    sent: int = 0
    statuses: Counter = field(default_factory=Counter)
    lost: Counter = field(default_factory=Counter)  # exception name -> count
    null_scores: int = 0
    latencies_s: list[float] = field(default_factory=list)  # answered with 200

    @property
    def requests_per_s(self) -> float:
        return self.statuses[200] / self.duration_s if self.duration_s else 0.0

    @property
    def images_per_s(self) -> float:
        return self.requests_per_s * self.images_per_request

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_s:
            return float("nan")
        return 1000 * float(torch.quantile(torch.tensor(self.latencies_s), q))

    def summary(self, label: str) -> str:
        return (
            f"[{label}] {self.sent} sent in {self.duration_s:.1f} s: "
            f"{self.requests_per_s:.1f} requests/s, {self.images_per_s:.1f} images/s, "
            f"p50 {self.percentile_ms(0.5):.1f} ms, p99 {self.percentile_ms(0.99):.1f} ms, "
            f"status {dict(sorted(self.statuses.items()))}, null scores {self.null_scores}, "
            f"lost {sum(self.lost.values())} {dict(self.lost) or ''}"
        )


def toy_request(model: str, images_per_request: int, seed: int = 0) -> bytes:
    """A JSON body of toy scenes (PNG) and their captions."""
    scenes = sample_scenes("train", images_per_request, seed=seed)
    images = [torch.from_numpy(render(s)).permute(2, 0, 1).float() / 255 for s in scenes]
    body = {
        "model": model,
        "prompts": [s.caption for s in scenes],
        "images": [codecs.encode_image_b64(image) for image in images],
    }
    return json.dumps(body).encode()


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"load tests only target loopback hosts {LOOPBACK_HOSTS}, got {host!r}")


async def _client_loop(
    client: httpx.AsyncClient, url: str, body: bytes, deadline: float, budget: list[int],
    report: LoadReport,
) -> None:
    while time.monotonic() < deadline and budget[0] > 0:
        budget[0] -= 1
        report.sent += 1
        start = time.perf_counter()
        try:
            response = await client.post(url, content=body)
        except httpx.HTTPError as err:
            report.lost[type(err).__name__] += 1
            continue
        report.statuses[response.status_code] += 1
        if response.status_code == 200:
            report.latencies_s.append(time.perf_counter() - start)
            report.null_scores += sum(s is None for s in response.json()["scores"])


async def run_load(
    url: str, body: bytes, images_per_request: int, clients: int = 32,
    duration_s: float = 10.0, max_requests: int = 1_000_000, headers: dict | None = None,
) -> LoadReport:
    """`clients` concurrent loops POSTing `body` to `url` until `duration_s` or `max_requests`."""
    check_loopback(url)
    if not 1 <= clients <= MAX_CLIENTS or not 0 < duration_s <= MAX_DURATION_S:
        raise ValueError(f"need 1 <= clients <= {MAX_CLIENTS} and 0 < duration <= {MAX_DURATION_S}")
    headers = {"Content-Type": "application/json", **(headers or {})}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60.0) as client:
        warmup = await client.post(url, content=body)  # first call pays lazy initialisation
        if warmup.status_code != 200:
            raise ValueError(f"warm-up request failed with {warmup.status_code}: {warmup.text}")
        report, budget = LoadReport(images_per_request=images_per_request), [max_requests]
        start = time.monotonic()
        deadline = start + duration_s
        await asyncio.gather(
            *(_client_loop(client, url, body, deadline, budget, report) for _ in range(clients))
        )
        report.duration_s = time.monotonic() - start
    return report


def unbatched_config(config: ServeConfig, model: str) -> ServeConfig:
    """The same scorer alone with max_batch_size=1, as its own app at /unbatched."""
    spec = config.scorer(model).model_copy(update={"max_batch_size": 1})
    return ServeConfig.model_validate(
        {**config.model_dump(), "app_name": f"{config.app_name}-unbatched",
         "route_prefix": "/unbatched", "vaes": {}, "scorers": [spec.model_dump()]}
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m reward_service.loadtest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="service root (default http://127.0.0.1:<serve.port>)")
    parser.add_argument("--model", default="toy-judge")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--images-per-request", type=int, default=1)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--serve", action="store_true", help="start a local Ray + the app")
    parser.add_argument("--compare-unbatched", action="store_true")
    parser.add_argument("--config", help="YAML with a `serve:` section")
    parser.add_argument("overrides", nargs="*", help="serve.key=value overrides")
    return parser.parse_args(argv)


def _headers(config: ServeConfig) -> dict:
    token = os.environ.get(config.auth_token_env or "", "")
    return {"Authorization": f"Bearer {token}"} if token else {}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from reward_service.app import load_serve_config  # deferred: loads fastapi, ray

    config = load_serve_config(args.config, args.overrides)
    config.scorer(args.model)  # KeyError early for a model the config does not have
    root = (args.url or f"http://127.0.0.1:{config.port}").rstrip("/")
    check_loopback(root)
    body = toy_request(args.model, args.images_per_request)
    runs = [("batched", root + config.route_prefix.rstrip("/") + "/score")]
    if args.serve or args.compare_unbatched:
        _start_apps(config, args, root)
        if args.compare_unbatched:
            runs.append(("max_batch_size=1", root + "/unbatched/score"))
    try:
        reports = {}
        for label, url in runs:
            reports[label] = asyncio.run(run_load(
                url, body, args.images_per_request, args.clients, args.duration,
                args.max_requests, _headers(config),
            ))
            print(reports[label].summary(label), flush=True)
    finally:
        _stop_apps(config, args)
    if len(reports) == 2:
        unbatched = reports["max_batch_size=1"].requests_per_s
        ratio = reports["batched"].requests_per_s / max(unbatched, 1e-9)
        print(f"throughput ratio batched / max_batch_size=1: {ratio:.2f}x", flush=True)
    return 0


def _start_apps(config: ServeConfig, args: argparse.Namespace, root: str) -> None:
    import ray
    from ray import serve

    from reward_service.app import build_app  # deferred: loads fastapi, ray
    from reward_service.client import wait_for_app  # deferred: loads fastapi, ray

    if args.serve:
        port = urlparse(root).port or config.port
        ray.init(include_dashboard=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(config), name=config.app_name, route_prefix=config.route_prefix,
                  blocking=False)
        wait_for_app(config.app_name, timeout_s=600)
    elif not ray.is_initialized():
        ray.init()  # attaches to RAY_ADDRESS
    if args.compare_unbatched:
        extra = unbatched_config(config, args.model)
        serve.run(build_app(extra), name=extra.app_name, route_prefix=extra.route_prefix,
                  blocking=False)
        wait_for_app(extra.app_name, timeout_s=600)


def _stop_apps(config: ServeConfig, args: argparse.Namespace) -> None:
    import ray
    from ray import serve

    if not ray.is_initialized():
        return
    if args.serve:
        ray.shutdown()  # the local cluster this process started goes with it
    elif args.compare_unbatched:
        serve.delete(unbatched_config(config, args.model).app_name)


if __name__ == "__main__":
    raise SystemExit(main())
