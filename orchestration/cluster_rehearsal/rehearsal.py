"""The three-node layout of `rglcd-rehearse --nodes 3`: nodes, placement, inputs in the store.

    head    the job drivers, the reward service and the Serve proxies (resource `head`)
    node_a  one training worker (resource `train_slot`), Ray Data and evaluation tasks
    node_b  the other training worker, likewise

The worker nodes share no disk with the head or each other (cluster.py), and every stage
reads and writes `s3://` locations of the loopback object store (object_store.py) only.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestration.cluster_rehearsal.cluster import LocalCluster
from orchestration.cluster_rehearsal.object_store import ObjectStore
from orchestration.local_head import submit_job
from orchestration.paths import REPO_ROOT

# Logical CPUs: the experts of each training stage stay deployed (Serve apps outlive their
# job) beside the evaluation's four scorers, ImageReward's replica taking 2.
HEAD_CPUS = 8
WORKER_CPUS = 2
WORKERS = ("node_a", "node_b")
TRAIN_SLOT = "train_slot"
# Two training workers, one on each worker node; the reward service's replicas on the head.
TRAINER_PLACEMENT = [
    "scaling.num_workers=2", f"scaling.resources={{{TRAIN_SLOT}: 1}}",
]
SERVICE_ON_HEAD = ["serve.scorers.0.resources={head: 0.01}",
                   "serve.vaes.teacher.resources={head: 0.01}"]
# Stand-ins that are files or folders the stages read; the rest of `paths` is not a location.
INPUTS = ("sd", "clip", "wds", "prompts", "hps_config", "hps")
# What every node's image would hold (ImageReward's offline tokenizer, found through HF_HOME,
# and its checkpoint):
# outside /tmp, so the worker nodes see it as they see the virtual environment.
NODE_IMAGE = Path("/var/tmp") / f"rglcd-node-image-{os.getpid()}"


@contextmanager
def three_nodes() -> Iterator[tuple[ObjectStore, LocalCluster]]:
    """The object store, a head and two worker nodes without a shared disk; all torn down."""
    with ObjectStore() as store, LocalCluster(store.env, head_cpus=HEAD_CPUS) as cluster:
        for name in WORKERS:
            cluster.add_worker(name, WORKER_CPUS, {TRAIN_SLOT: 1})
        try:
            yield store, cluster
        finally:
            shutil.rmtree(NODE_IMAGE, ignore_errors=True)


def node_image_copy(local: str) -> str:
    """A copy of the local folder where every node sees it (part of the nodes' image)."""
    target = NODE_IMAGE / Path(local).name
    shutil.copytree(local, target, dirs_exist_ok=True)
    return str(target)


def upload_inputs(store: ObjectStore, paths: dict[str, str]) -> dict[str, str]:
    """The stand-ins copied to s3://<bucket>/inputs/..., `paths` with their URIs instead."""
    uris = dict(paths)
    for key in INPUTS:
        if key in paths:
            uris[key] = store.upload(Path(paths[key]), f"inputs/{key}/{Path(paths[key]).name}")
    if "imagereward_dir" in uris:
        # ImageReward's 1.7 GB checkpoint stays out of the store: moto assembles uploads in
        # memory, and three nodes' caches of it would fill this machine's RAM (tmpfs).
        folder = node_image_copy(paths["imagereward_dir"])
        uris["imagereward"] = f"{folder}/ImageReward.pt"
        uris["imagereward_med_config"] = f"{folder}/med_config.json"
    return uris


def check_isolation(cluster: LocalCluster, store: ObjectStore, env: dict) -> dict:
    """node_a writes a file under /tmp, under outputs/ and in the store; node_b must see the
    object only. Raises when the nodes share a disk."""
    proc = submit_job(cluster.url, REPO_ROOT, [
        "python", "-m", "orchestration.cluster_rehearsal.isolation_probe", *WORKERS,
        store.uri("probe")], cwd=REPO_ROOT, env_vars=env, timeout_s=300)
    if proc.returncode != 0:
        raise RuntimeError(f"the isolation probe failed:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    line = next(x for x in reversed(proc.stdout.splitlines()) if x.startswith("{"))
    result = json.loads(line)
    if result["writer"] == result["reader"] or result["seen"] != {
            "tmp": False, "outputs": False, "object_store": True}:
        raise RuntimeError(f"the worker nodes share a disk or miss the store: {result}")
    return result
