"""`python -m reward_service` as a user runs it: starts, answers /healthz and /score, stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from reward_service.loadtest import toy_request
from tests.conftest import REPO_ROOT, free_port

pytestmark = pytest.mark.ray  # the service starts a local Ray of its own

START_TIMEOUT_S = 300  # a fresh local Ray + replicas; slow when the machine is busy


def _wait_ready(proc: subprocess.Popen, log: Path) -> str:
    """Poll the service's log (a file, so a full pipe can never block it) for the ready line."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if "reward service ready at" in line:
                return line.split("ready at ")[1].split()[0]
        if proc.poll() is not None:
            pytest.fail(f"service exited with {proc.returncode}:\n{_tail(log)}")
        time.sleep(0.5)
    pytest.fail(f"service not ready after {START_TIMEOUT_S} s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-40:])


LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def _listening(pid: int) -> dict[str, set[str]]:
    """Addresses that the process and every process below it listen on, by process name."""
    root = psutil.Process(pid)
    found: dict[str, set[str]] = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="inet")
            name = proc.name()
        except psutil.Error:  # a worker that ended meanwhile
            continue
        for conn in conns:
            if conn.status == psutil.CONN_LISTEN:
                found.setdefault(name, set()).add(conn.laddr.ip)
    return found


def test_python_m_reward_service_serves_toy_judge_then_stops(tmp_path):
    port = free_port()
    # One replica (the rule-based judge) is enough to check the entry point: every toy
    # scorer's loading and scoring is tested in tests/unit, their serving in tests/ray.
    command = [sys.executable, "-m", "reward_service", "--port", str(port), "--no-dashboard",
               "--num-cpus", "4", "serve.scorers=[{name: toy-judge, kind: toy-judge}]",
               "serve.vaes={}"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # the service must set it by itself
    log = tmp_path / "service.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        url = _wait_ready(proc, log)
        assert url == f"http://127.0.0.1:{port}"
        health = httpx.get(f"{url}/healthz", timeout=30)
        assert health.status_code == 200 and "toy-judge" in health.json()["models"]
        body = toy_request("toy-judge", images_per_request=3, seed=1)
        response = httpx.post(f"{url}/score", content=body, timeout=60,
                              headers={"Content-Type": "application/json"})
        assert response.status_code == 200, response.text
        scores = response.json()["scores"]
        # Rendered scenes with their own captions: the judge finds them right (top score 10).
        assert len(scores) == len(json.loads(body)["prompts"]) == 3
        assert all(s is not None and s > 5 for s in scores), scores
        # Its own Ray's control plane (GCS, raylet, agents, job server) is private to the
        # machine. Serve replicas are the exception Ray 2.60 leaves: their inter-deployment
        # gRPC server binds [::] in Ray's own code (README, Security).
        listening = _listening(proc.pid)
        assert {"gcs_server", "raylet"} <= set(listening), listening
        control = {k: v for k, v in listening.items() if "ServeReplica" not in k}
        exposed = {k: v - LOOPBACK for k, v in control.items() if v - LOOPBACK}
        assert not exposed, exposed
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, _tail(log)
    assert "stopping the reward service" in log.read_text(errors="replace")
