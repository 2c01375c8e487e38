"""`ray job submit -- python trainer/run.py` on a `ray start --head` cluster (issue 5).

The test owns its cluster: `ray start --head --block` runs as a child process in its own
process group, on free loopback ports and its own temp dir, and is torn down by signalling
that process (then any of its descendants still alive), never with `ray stop`, which would
stop every cluster on the machine. The repository is uploaded as the job's working_dir;
`.gitignore` already keeps `.venv/` (GBs) and `outputs/` out, and the runtime_env excludes
repeat that so the upload stays far below Ray's package limit (the gRPC message size, 512 MiB)
even where `.gitignore` is ignored (RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from rglcd.tiny_models import save_tiny_sd_pipeline
from rglcd.toy.data import ensure_toy_dataset
from tests.conftest import REPO_ROOT, free_port

RAY_CLI = str(Path(sys.executable).parent / "ray")
UPLOAD_EXCLUDES = [".venv", "outputs", ".git", "**/__pycache__", ".pytest_cache", ".ruff_cache"]
NO_AGENT = "No available agent to submit job"
PORT_FLAGS = (
    "--port",
    "--dashboard-port",
    "--ray-client-server-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
    "--node-manager-port",
    "--object-manager-port",
)

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="teardown reads /proc")


def cluster_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_JOB_ID")}
    path = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `python` = venv
    return env | {
        "PATH": path,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
    }


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def wait_for_job_server(url: str, head: subprocess.Popen, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"`ray start --head` exited with {head.returncode}")
        try:
            if httpx.get(f"{url}/api/jobs/", timeout=5.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    raise TimeoutError(f"the job server at {url} did not answer within {timeout_s:.0f} s")


def submit(command: list[str], cwd: Path, agent_wait_s: float = 180.0):
    """Run `ray job submit`, again while the head has no job agent registered yet.

    The dashboard answers before its node's agent has registered; until then a submission
    is rejected with "No available agent to submit job, please try again later".
    """
    deadline = time.monotonic() + agent_wait_s
    while True:
        proc = subprocess.run(
            command, capture_output=True, text=True, env=cluster_env(), timeout=600, cwd=cwd
        )
        not_ready = NO_AGENT in proc.stdout + proc.stderr
        if proc.returncode == 0 or not not_ready or time.monotonic() > deadline:
            return proc
        time.sleep(2.0)


def stop_head(head: subprocess.Popen) -> None:
    """SIGINT lets `ray start --block` shut its node down; SIGKILL whatever is left."""
    ours = descendants(head.pid)
    if head.poll() is None:
        os.killpg(head.pid, signal.SIGINT)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=10)
    for pid in ours:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def head_node():
    """A one-node cluster with dashboard (job server): yields the dashboard URL."""
    temp_dir = tempfile.mkdtemp(prefix="rj-", dir="/tmp")  # short: socket paths are limited
    ports = {flag: free_port() for flag in PORT_FLAGS}
    command = [RAY_CLI, "start", "--head", "--block", "--num-cpus=4", "--include-dashboard=true"]
    command += ["--dashboard-host=127.0.0.1", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    command += [f"{flag}={port}" for flag, port in ports.items()]
    log = open(Path(temp_dir) / "ray-start.log", "w")  # closed at teardown
    head = subprocess.Popen(
        command, env=cluster_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{ports['--dashboard-port']}"
    try:
        wait_for_job_server(url, head)
        yield url
    finally:
        stop_head(head)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_job_submit_runs_the_trainer(tmp_path, head_node):
    teacher = save_tiny_sd_pipeline(tmp_path / "teacher")
    ensure_toy_dataset(tmp_path / "data", "train", 16, seed=0)
    out = tmp_path / "out"  # absolute: the job's working directory is the uploaded copy
    overrides = [
        f"model.teacher={teacher}",
        f"data.train_path={tmp_path / 'data'}",
        "model.resolution=16",
        "reward.beta=0",  # plain LCD: no reward service needed
        f"output.root_dir={out}",
        "run_name=job",
        "lcd.max_steps=2",
        "lcd.global_batch_size=4",
        "output.log_every=1",
        "output.checkpoint_every=0",
        "output.sample_every=0",
    ]
    runtime_env = {"excludes": UPLOAD_EXCLUDES, "env_vars": {"HF_HUB_OFFLINE": "1"}}
    command = [RAY_CLI, "job", "submit", "--address", head_node, "--working-dir", str(REPO_ROOT)]
    command += ["--runtime-env-json", json.dumps(runtime_env), "--"]
    command += ["python", "trainer/run.py", *overrides]
    start = time.perf_counter()
    proc = submit(command, cwd=tmp_path)
    seconds = time.perf_counter() - start
    logs = proc.stdout + proc.stderr
    job_lines = [line for line in logs.splitlines() if "packaging.py" not in line]

    assert proc.returncode == 0, "\n".join(job_lines[-60:])
    assert "succeeded" in logs
    run_dir = out / "job"
    assert f"Outputs: {run_dir}" in logs  # the job's own stdout, streamed back
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1]
    assert (run_dir / "pipeline" / "model_index.json").is_file()
    assert (run_dir / "report.md").is_file()
    assert seconds < 600
