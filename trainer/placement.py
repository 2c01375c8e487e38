"""Do the run's GPU bundles fit the cluster's nodes? Checked before Ray Train and Serve start.

Ray places each train worker (`scaling.gpus_per_worker`, 1 by default on GPU) and each
reward-service replica (`serve.*.num_gpus`, deployed in LRM mode only) whole on one node. A
bundle that fits nowhere is never placed and the trainer waits forever: e.g. an LRM recipe's
8 train workers + 1 reward GPU (expert 0.5 + VAE 0.5) on one 8-GPU node.

`gpu_placement_problem` is a pure function of the config and the nodes' GPU counts (no Ray,
unit-tested); `check_gpu_placement` feeds it the live nodes of the connected cluster.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainer.config import RGLCDConfig

_SLACK = 1e-9  # fractional GPUs (0.5 + 0.5) must fill a GPU exactly


def train_worker_gpus(cfg: RGLCDConfig) -> float:
    scaling = cfg.scaling
    if scaling.gpus_per_worker is not None:
        return scaling.gpus_per_worker
    return float(scaling.use_gpu)


def reward_service_gpus(cfg: RGLCDConfig) -> list[float]:
    """One entry per reward-service replica that asks for GPUs (the service runs in LRM mode)."""
    if not cfg.uses_lrm:
        return []
    serve = cfg.serve
    replicas = [(s.num_gpus, s.most_replicas) for s in serve.scorers]
    replicas += [(v.num_gpus, v.most_replicas) for v in serve.vaes.values()]
    return [gpus for gpus, count in replicas for _ in range(count) if gpus > 0]


def bundles_fit(bundles: list[float], node_gpus: list[float]) -> bool:
    """First-fit decreasing of the GPU bundles into the nodes (exact for the equal-sized,
    few bundles of a run; a heuristic in general, as is Ray's own packing)."""
    free = sorted(node_gpus, reverse=True)
    for need in sorted(bundles, reverse=True):
        for i, room in enumerate(free):
            if need <= room + _SLACK:
                free[i] = room - need
                break
        else:
            return False
    return True


def gpu_placement_problem(cfg: RGLCDConfig, node_gpus: list[float]) -> str | None:
    """Why the run's GPU bundles cannot all be placed on these nodes, with the
    `scaling.num_workers` that would fit (a divisor of the global batch); None when they fit."""
    per_worker, service = train_worker_gpus(cfg), reward_service_gpus(cfg)
    workers = max(cfg.scaling.num_workers, 1) if per_worker > 0 else 0
    if bundles_fit([per_worker] * workers + service, node_gpus):
        return None
    nodes = ", ".join(f"{g:g}" for g in sorted(node_gpus, reverse=True)) or "none"
    message = (
        f"the run needs {workers} train workers x {per_worker:g} GPU"
        + (
            f" + {sum(service):g} GPU for the reward service ({len(service)} replicas)"
            if service
            else ""
        )
        + f", but the cluster's nodes have {nodes} GPUs; Ray would wait for them forever."
    )
    batch = cfg.lcd.global_batch_size
    fitting = [
        n
        for n in range(workers - 1, 0, -1)
        if batch % n == 0 and bundles_fit([per_worker] * n + service, node_gpus)
    ]
    if fitting:
        return (
            f"{message} Set scaling.num_workers={fitting[0]} (it divides "
            f"lcd.global_batch_size={batch}; any divisor that fits works: {fitting}), or add GPUs."
        )
    if service:
        return f"{message} Lower serve.*.num_gpus, run the reward service on another node, or add GPUs."
    return f"{message} Add GPUs, or set scaling.use_gpu=false to train on CPU."


def check_gpu_placement(cfg: RGLCDConfig) -> None:
    """Before Ray Train and Serve start: the train workers and reward-service replicas must fit
    the nodes' GPUs (ValueError). A cluster that autoscales may still add nodes: a warning."""
    import ray

    node_gpus = [n["Resources"].get("GPU", 0.0) for n in ray.nodes() if n["Alive"]]
    problem = gpu_placement_problem(cfg, node_gpus)
    if problem is None:
        return
    if not cluster_autoscales():
        raise ValueError(problem)
    print(f"warning: {problem} (unless the cluster adds GPU nodes)", file=sys.stderr)


def cluster_autoscales() -> bool:
    """Whether the cluster has an autoscaler config (the one Ray Train's own resource check
    reads; a private API, so any failure counts as no autoscaler)."""
    try:
        from ray._private.state import state

        return bool(state.get_max_resources_from_cluster_config())
    except Exception:
        return False
