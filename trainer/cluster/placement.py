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


def _gpus_of(node_gpus: float) -> list[float]:
    """A node's GPUs as free fractions: whole GPUs, plus one partly taken GPU when the free
    amount is fractional (Ray reports a node's free GPUs as one number)."""
    whole = int(node_gpus + _SLACK)
    rest = node_gpus - whole
    return [1.0] * whole + ([rest] if rest > _SLACK else [])


def bundles_fit(bundles: list[float], node_gpus: list[float]) -> bool:
    """First-fit decreasing of the GPU bundles into the nodes, each node whole and each GPU
    whole: a fractional bundle (0.75) must fit in the free part of one GPU, as in Ray, and a
    bundle of n >= 1 GPUs takes n free whole GPUs of one node. Exact for the equal-sized, few
    bundles of a run; a heuristic in general, as is Ray's own packing."""
    nodes = [_gpus_of(g) for g in sorted(node_gpus, reverse=True)]
    for need in sorted(bundles, reverse=True):
        if not any(_take(gpus, need) for gpus in nodes):
            return False
    return True


def _take(gpus: list[float], need: float) -> bool:
    """Take `need` GPUs from one node's free fractions (in place); False when they do not fit."""
    if need >= 1 - _SLACK:
        whole = [i for i, room in enumerate(gpus) if room >= 1 - _SLACK]
        if len(whole) < round(need):
            return False
        for i in whole[: round(need)]:
            gpus[i] = 0.0
        return True
    for i, room in enumerate(gpus):
        if need <= room + _SLACK:
            gpus[i] = room - need
            return True
    return False


def gpu_placement_problem(
    cfg: RGLCDConfig, node_gpus: list[float], service_deployed: bool = False
) -> str | None:
    """Why the run's GPU bundles cannot all be placed on these nodes, with the
    `scaling.num_workers` that would fit (a divisor of the global batch); None when they fit.
    `service_deployed`: the reward service already runs (its GPUs are not this run's to place)."""
    per_worker = train_worker_gpus(cfg)
    service = [] if service_deployed else reward_service_gpus(cfg)
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
    the nodes' free GPUs (ValueError): GPUs another job holds do not count. A cluster that
    autoscales may still add nodes: a warning."""
    deployed = reward_service_deployed(cfg)
    problem = gpu_placement_problem(cfg, free_node_gpus(), deployed)
    if problem is None:
        return
    if deployed:  # its replicas hold fractions of GPUs Ray reports only as a sum per node
        print(f"warning: {problem} (counted from the free GPUs per node beside the running "
              "reward service; Ray may still place the workers)", file=sys.stderr)
        return
    if not cluster_autoscales():
        raise ValueError(problem)
    print(f"warning: {problem} (unless the cluster adds GPU nodes)", file=sys.stderr)


def free_node_gpus() -> list[float]:
    """Free GPUs of each live node: GPUs another job (or an earlier run's Serve app) holds
    are not this run's to place."""
    import ray

    free = _available_per_node()
    if free is None:  # an older or newer Ray without the per-node call: the cluster total
        return [ray.available_resources().get("GPU", 0.0)]
    return [resources.get("GPU", 0.0) for resources in free.values()]


def _available_per_node() -> dict[str, dict[str, float]] | None:
    try:
        from ray._private.state import available_resources_per_node

        return available_resources_per_node()
    except Exception:
        return None


def reward_service_deployed(cfg: RGLCDConfig) -> bool:
    """Whether the run's reward-service app already runs (the trainer reuses it)."""
    if not reward_service_gpus(cfg):
        return False
    try:
        from ray import serve

        app = serve.status().applications.get(cfg.serve.app_name)
    except Exception:  # Serve not started on this cluster
        return False
    return app is not None and app.status == "RUNNING"


def cluster_autoscales() -> bool:
    """Whether the cluster has an autoscaler config (the one Ray Train's own resource check
    reads; a private API, so any failure counts as no autoscaler)."""
    try:
        from ray._private.state import state

        return bool(state.get_max_resources_from_cluster_config())
    except Exception:
        return False
