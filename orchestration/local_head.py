"""A private one-node Ray cluster (`ray start --head --block`) for job-submission checks.

The caller owns the cluster: the head runs as a child process in its own process group, on
free loopback ports and its own temp dir, and `stop_head` tears it down by signalling that
process (then any of its descendants still alive), never with `ray stop`, which would stop
every Ray cluster on the machine. Used by the rehearsal of the real path
(orchestration/commands/rehearse_real_path.py) and by orchestration/bench/default_run.py.

    with private_head(num_cpus=4) as url:
        proc = submit_job(url, REPO_ROOT, ["python", "trainer/run.py"], cwd=REPO_ROOT)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from orchestration.paths import REPO_ROOT

RAY_CLI = str(Path(sys.executable).parent / "ray")
# `.gitignore` already keeps these out of the uploaded working_dir; the excludes repeat it for
# RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1 (the package limit is the gRPC message size, 512 MiB).
UPLOAD_EXCLUDES = [
    ".venv", ".venv-imagereward", "outputs", ".git", "**/__pycache__", ".pytest_cache",
    ".ruff_cache",
]
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


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """`n` distinct free TCP ports on 127.0.0.1 (all held open while choosing: a port freed
    and asked for again may be handed out twice, and a Ray node refuses two components on
    one port)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def cluster_env() -> dict[str, str]:
    """This environment without a Ray address, the venv's `python` first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_JOB_ID")}
    path = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
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


def stop_head(head: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGINT lets `ray start --block` shut its node down; SIGKILL whatever is left after
    `grace_s` (on two busy cores a clean shutdown can take over 30 s; the cluster is ours and
    its temp dir is removed after, so nothing is lost by cutting it short)."""
    ours = descendants(head.pid)
    if head.poll() is None:
        os.killpg(head.pid, signal.SIGINT)
        try:
            head.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=10)
    for pid in ours:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextlib.contextmanager
def private_head(num_cpus: int = 4, dashboard: bool = True) -> Iterator[str]:
    """Start a head node with a job server; yield its dashboard URL; tear it down."""
    temp_dir = tempfile.mkdtemp(prefix="rj-", dir="/tmp")  # short: socket paths are limited
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    command = [RAY_CLI, "start", "--head", "--block", f"--num-cpus={num_cpus}"]
    command += [f"--include-dashboard={str(dashboard).lower()}", "--dashboard-host=127.0.0.1"]
    command += [f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    command += [f"{flag}={port}" for flag, port in ports.items()]
    log = open(Path(temp_dir) / "ray-start.log", "w")  # noqa: SIM115 - closed at teardown
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


def submit_job(
    url: str,
    working_dir: Path,
    entrypoint: list[str],
    cwd: Path,
    agent_wait_s: float = 180.0,
    timeout_s: float = 1800.0,
    env_vars: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """`ray job submit --working-dir ... -- entrypoint` (the job's environment gets
    `env_vars`), retried while the head's job agent has not registered yet (the dashboard
    answers first, and until then a submission is rejected with "No available agent to submit
    job, please try again later")."""
    job_env = {"HF_HUB_OFFLINE": "1"} | (env_vars or {})
    runtime_env = {"excludes": UPLOAD_EXCLUDES, "env_vars": job_env}
    command = [RAY_CLI, "job", "submit", "--address", url, "--working-dir", str(working_dir)]
    command += ["--runtime-env-json", json.dumps(runtime_env), "--", *entrypoint]
    deadline = time.monotonic() + agent_wait_s
    while True:
        proc = subprocess.run(
            command, capture_output=True, text=True, env=cluster_env(), timeout=timeout_s,
            cwd=cwd,
        )
        not_ready = NO_AGENT in proc.stdout + proc.stderr
        if proc.returncode == 0 or not not_ready or time.monotonic() > deadline:
            return proc
        time.sleep(2.0)


def run_job(name: str, entrypoint: list[str], url: str, env_vars: dict, log_dir: Path) -> float:
    """`ray job submit --working-dir <checkout> -- entrypoint` to the cluster at `url`, as
    docs/cluster.md runs each stage; the job's output goes to <log_dir>/<name>.log. Returns its
    seconds; raises with the output's tail when the job fails."""
    start = time.perf_counter()
    proc = submit_job(url, REPO_ROOT, entrypoint, cwd=REPO_ROOT, env_vars=env_vars)
    output = proc.stdout + proc.stderr
    (log_dir / f"{name}.log").write_text(output)
    seconds = time.perf_counter() - start
    print(f"job {name}: exit {proc.returncode} after {seconds:.0f} s", file=sys.stderr, flush=True)
    if proc.returncode != 0:
        tail = "\n".join(output.splitlines()[-40:])
        raise RuntimeError(f"job {name} failed (exit {proc.returncode}): {' '.join(entrypoint)}\n{tail}")
    return seconds
