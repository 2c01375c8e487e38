"""Whether every node of a Ray cluster sees a local folder: a shared disk (NFS) or not.

Ray Train refuses a local storage path that a remote worker cannot reach, but only once the
worker group has started (a minute or more into a run, with an error about "cluster
storage"). A run asks first: the driver writes a marker file into the folder and a task on
each alive node looks for it, so a folder that is not shared fails in seconds, naming the
nodes that cannot see it.
"""

from __future__ import annotations

import os
import uuid

from rglcd import storage

MARKER_PREFIX = ".rglcd-shared-disk-probe-"
PROBE_TIMEOUT_S = 300.0  # a node's first task starts a worker process (and unpacks the job)


def nodes_not_seeing(location: str) -> list[str]:
    """The alive nodes of the connected Ray cluster on which the local folder `location`
    (made absolute on this node) does not hold the file this node writes there; [] when every
    node sees it, on a one-node cluster, or for a URI (an object store is shared)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not storage.is_local(location):
        return []
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return []
    folder = storage.local_path(location)
    os.makedirs(folder, exist_ok=True)
    marker = os.path.join(folder, f"{MARKER_PREFIX}{uuid.uuid4().hex}")
    with open(marker, "w") as out:
        out.write("written by the run's driver; every node must see it\n")
    try:
        probe = ray.remote(num_cpus=0, max_retries=0)(os.path.exists)
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(marker) for n in nodes]
        seen = ray.get(refs, timeout=PROBE_TIMEOUT_S)
    finally:
        os.remove(marker)
    return [f"{n['NodeManagerAddress']} (node {n['NodeID'][:8]})"
            for n, ok in zip(nodes, seen, strict=True) if not ok]
