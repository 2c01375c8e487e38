"""Test tiers and shared fixtures.

Tiers, by directory (and marker, added automatically):
  tests/unit  - fast, pure tensor / plain-class tests; no Ray.
  tests/ray   - integration tests on ONE session-scoped local Ray cluster (`ray_cluster`).
  tests/e2e   - the real entry points (trainer/run.py, python -m reward_service, ...); a module
                whose tests start a Ray cluster says so with `pytestmark = pytest.mark.ray`.
`make check` runs `pytest -m "not ray and not slow" tests/unit tests/e2e` (no Ray cluster at
all, nothing that takes tens of seconds: the inner loop); `make test` runs everything. Select a tier with e.g. `pytest tests/unit` or
`pytest -m "not e2e"`.
Tests marked `imagereward_env` need ImageReward's isolated environment (built from PyPI once,
minutes: `make test` does it first); `pytest -m "not imagereward_env"` leaves them out.
"""

from __future__ import annotations

import os
from pathlib import Path

# Every Ray the tests start listens on 127.0.0.1 only (read by Ray at import: set it first).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest  # noqa: E402

from orchestration.local_head import free_port  # noqa: E402

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Ray Train, in every cluster the tests start (inherited by raylets and their workers): no
# preemption watcher (one actor process fewer per run; a test machine is never drained), and
# the controller polls its workers every 0.25 s instead of 2 s (a run's start and end are seen
# at once: tiny runs last seconds).
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")

from orchestration.paths import REPO_ROOT  # noqa: E402


def pytest_configure(config):
    # Tiny models gain nothing from intra-op threads, and the Ray workers of the integration
    # tests share the same cores: one thread per process avoids oversubscription stalls.
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "ray" in parts:
            item.add_marker(pytest.mark.ray)
        if "e2e" in parts:
            item.add_marker(pytest.mark.e2e)
    # Tiers in order unit, e2e, ray: the shared cluster starts with the first Ray-tier test, so
    # no other test runs beside its idle daemons, and e2e tests (which start their own Ray)
    # do not compete with it for the cores.
    tier = {"unit": 0, "e2e": 1, "ray": 2}
    items.sort(key=lambda item: next(
        (tier[part] for part in Path(str(item.fspath)).parts if part in tier), 0))


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the whole session (logical CPUs oversubscribed on purpose)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",  # a new cluster, never one found on the machine
            num_cpus=8,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}},
        )
    yield ray
    # No `ray stop`: this only disconnects and tears down the cluster this session started.
    ray.shutdown()


@pytest.fixture(scope="session")
def serve_http_port(ray_cluster) -> int:
    """Start Serve once on a free loopback port; apps are added with serve.run(route_prefix=...)."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()
