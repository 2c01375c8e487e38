"""A Ray cluster of several nodes on this machine whose nodes share no disk.

The head is `ray start --head --block` (its own ports and temp dir, the job server on
127.0.0.1). Each worker node is `ray start --address=<head> --block` inside a mount namespace
of its own (`unshare -m`, which needs root), where a private tmpfs covers `/tmp` (which holds
the node's temp dir, so its unpacked copy of a job's working directory, its spilled objects and
whatever a job writes under /tmp) and the checkout's `outputs/`: a file one node writes there
is invisible to the others, as on machines that share no disk. The tmpfs mounts live in the
namespace and vanish with its last process. Every node gets the object store's AWS_* variables
and a custom resource of its own name (`{"node_a": 1}`), plus any shared ones, so a test can
pin work to a node. `kill_raylet` loses a node the way a crashed machine does;
`add_worker` starts a replacement, as an autoscaler would.

    with ObjectStore() as store, LocalCluster(store.env) as cluster:
        cluster.add_worker("node_a", num_cpus=3, resources={"train_slot": 1})
        submit_job(cluster.url, ...)
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from orchestration.local_head import (
    PORT_FLAGS,
    RAY_CLI,
    cluster_env,
    descendants,
    free_ports,
    stop_head,
    wait_for_job_server,
)
from orchestration.paths import REPO_ROOT
from rglcd.local_ray import SINGLE_MACHINE_ENV

# A worker node needs no dashboard, job server or client server of its own.
WORKER_PORT_FLAGS = (
    "--node-manager-port", "--object-manager-port", "--metrics-export-port",
    "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
)
HEALTH_CHECKS = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
                 "RAY_health_check_failure_threshold": "3"}


class Node:
    """One `ray start --block` process (and its process group) with its log."""

    def __init__(self, name: str, proc: subprocess.Popen, log: Path) -> None:
        self.name, self.proc, self.log = name, proc, log
        self.killed = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def raylet_pid(self) -> int | None:
        for pid in descendants(self.proc.pid):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                    return pid
            except OSError:
                continue
        return None


class LocalCluster:
    """A head node plus worker nodes in mount namespaces of their own; tears all down."""

    def __init__(self, env: dict[str, str] | None = None, head_cpus: int = 2,
                 head_resources: dict[str, float] | None = None) -> None:
        # A killed node is declared dead after ~3 s instead of ~30 s. Ray's single-machine mode
        # (which a process of this project or its tests may have switched on) refuses joins.
        self.env = cluster_env() | HEALTH_CHECKS | {SINGLE_MACHINE_ENV: "1"} | (env or {})
        self.head_cpus, self.head_resources = head_cpus, {"head": 1} | (head_resources or {})
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))  # short socket paths
        self.ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
        self.address = f"127.0.0.1:{self.ports['--port']}"
        self.url = f"http://127.0.0.1:{self.ports['--dashboard-port']}"
        self.head: Node | None = None
        self.workers: dict[str, Node] = {}

    def start(self) -> None:
        command = [RAY_CLI, "start", "--head", "--block", f"--num-cpus={self.head_cpus}",
                   f"--resources={json.dumps(self.head_resources)}",
                   "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
                   f"--temp-dir={self.temp_dir / 'head'}", "--disable-usage-stats",
                   "--min-worker-port=0", "--max-worker-port=0"]
        command += [f"{flag}={port}" for flag, port in self.ports.items()]
        # The node-local model cache (rglcd/storage.py) in the node's own temp dir.
        cache = {"RGLCD_CACHE_DIR": str(self.temp_dir / "head-cache")}
        self.head = self._spawn("head", command, cache)
        wait_for_job_server(self.url, self.head.proc)

    def add_worker(self, name: str, num_cpus: int, resources: dict[str, float] | None = None,
                   timeout_s: float = 120.0) -> Node:
        """Start a worker node `name` in its own mount namespace; returns once it joined."""
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            raise PermissionError("worker nodes without a shared disk need root (unshare -m)")
        outputs = REPO_ROOT / "outputs"
        outputs.mkdir(exist_ok=True)
        temp = f"/tmp/rn-{name}"
        ray = [RAY_CLI, "start", f"--address={self.address}", "--block",
               f"--num-cpus={num_cpus}", f"--resources={json.dumps({name: 1} | (resources or {}))}",
               "--node-ip-address=127.0.0.1", f"--temp-dir={temp}", "--disable-usage-stats",
               "--min-worker-port=0", "--max-worker-port=0"]
        ray += [f"{flag}={port}" for flag, port in
                zip(WORKER_PORT_FLAGS, free_ports(len(WORKER_PORT_FLAGS)), strict=True)]
        # Mount first, then exec the node: every process of the node sees only its own tmpfs.
        script = (f"mount -t tmpfs -o size=4g {name}-tmp /tmp && "
                  f"mount -t tmpfs -o size=1g {name}-outputs {shlex.quote(str(outputs))} && "
                  f"mkdir -p {temp} && exec {shlex.join(ray)}")
        node = self._spawn(name, ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                           {"RGLCD_CACHE_DIR": f"{temp}/cache"})
        self.workers[name] = node
        self.wait_for_nodes(timeout_s)
        return node

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> Node:
        log = self.temp_dir / f"{name}.log"
        with log.open("a") as out:
            proc = subprocess.Popen(command, env=self.env | env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        return Node(name, proc, log)

    def alive_nodes(self) -> list[dict]:
        nodes = httpx.get(f"{self.url}/nodes?view=summary", timeout=10.0).json()
        summary = nodes.get("data", {}).get("summary", [])
        return [n for n in summary if n.get("raylet", {}).get("state") == "ALIVE"]

    def wait_for_nodes(self, timeout_s: float = 120.0) -> None:
        """Until the head and every worker node started and not killed are alive."""
        running = [n for n in self.workers.values() if not n.killed]
        deadline = time.monotonic() + timeout_s
        while True:
            for node in running:
                if not node.alive():
                    tail = node.log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"node {node.name} exited ({node.log}):\n{tail}")
            try:
                if len(self.alive_nodes()) >= 1 + len(running):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{1 + len(running)} nodes did not join in {timeout_s:.0f} s")
            time.sleep(1.0)

    def kill_raylet(self, name: str) -> None:
        """SIGKILL the node's raylet, as a machine that dies: its workers and actors go with
        it, the head notices after its health checks fail."""
        node = self.workers[name]
        node.killed = True
        pid = node.raylet_pid()
        if pid is None:
            raise RuntimeError(f"node {name} has no raylet")
        os.kill(pid, signal.SIGKILL)
        self._kill_group(node)

    def _kill_group(self, node: Node) -> None:
        ours = descendants(node.proc.pid)
        try:
            os.killpg(node.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in ours:  # workers start sessions of their own
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        node.proc.wait(timeout=30)

    def stop(self) -> None:
        for node in self.workers.values():
            self._kill_group(node)
        if self.head is not None:
            stop_head(self.head.proc)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
