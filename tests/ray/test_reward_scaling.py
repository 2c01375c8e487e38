"""Scorer replicas run `scorer_threads` batches at once and accept Serve autoscaling options."""

from __future__ import annotations

import asyncio

import torch

from reward_service.config import ScorerConfig, ServeConfig
from reward_service.scaling import Autoscaling
from tests.helpers.scorers import make_probe

APP = "scaling-test"


def test_a_replica_scores_scorer_threads_batches_at_once(serve_http_port):
    from ray import serve

    from reward_service.app import build_app
    from reward_service.client import RewardClient, wait_for_app

    probe = ScorerConfig(name="probe", kind="toy-judge", max_batch_size=1, scorer_threads=3,
                         num_cpus=0.1, autoscaling=Autoscaling(max_replicas=2))
    config = ServeConfig(app_name=APP, route_prefix=f"/{APP}", vaes={}, scorers=[probe])
    serve.run(build_app(config, make_probe), name=APP, route_prefix=f"/{APP}")
    try:
        wait_for_app(APP, timeout_s=120)
        client = RewardClient(app_name=APP, timeout_s=60)

        async def six_requests():
            calls = [client.score_images("probe", torch.rand(1, 3, 16, 16), ["a"])
                     for _ in range(6)]
            return await asyncio.gather(*calls)

        results = asyncio.run(six_requests())
        most = max(item.details["most_at_once"] for r in results for item in r.items)
        assert all(item.score == 1.0 for r in results for item in r.items)
        assert 2 <= most <= 3  # batches of one image overlap, up to scorer_threads
    finally:
        serve.delete(APP)
