"""The trainer's Ray connection and the logical CPUs a run reserves.

`connect_ray` attaches to a running cluster (RAY_ADDRESS, or the cluster of a submitted job)
or starts a local one sized for the run; `logical_cpus_needed` is that size, also used to warn
when an attached cluster is too small.
"""

from __future__ import annotations

import logging
import math
import os
import sys

from rglcd.local_ray import keep_local_ray_on_loopback
from rglcd.paths import PACKAGES_ROOT
from trainer.config import RGLCDConfig

READ_TASK_CPUS = 2


# Ray Train on the one-machine cluster this process starts: no preemption watcher (an actor
# process of its own; a local machine is never drained), and the controller polls its workers
# every 0.5 s instead of 2 s, so a run's start and end are seen sooner.
LOCAL_RAY_TRAIN_ENV = {
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
}


def connect_ray(cfg: RGLCDConfig) -> None:
    """Attach to RAY_ADDRESS (or the cluster of a submitted job), else start a local Ray
    that listens on 127.0.0.1 only (rglcd/local_ray.py)."""
    keep_local_ray_on_loopback()  # before `import ray`; no effect when attaching
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return
    needed = logical_cpus_needed(cfg)
    if os.environ.get("RAY_ADDRESS") or os.environ.get("RAY_JOB_ID"):
        # passing resources when attaching raises (docs/method.md §7)
        ray.init(log_to_driver=False)
        warn_if_too_few_cpus(ray.cluster_resources().get("CPU", 0.0), needed)
    else:
        for key, value in LOCAL_RAY_TRAIN_ENV.items():  # read by the Train controller actor
            os.environ.setdefault(key, value)
        ray.init(
            num_cpus=max(os.cpu_count() or 1, math.ceil(needed)),
            # The dashboard to watch the run on; Ray Train's placement-group cleaner also
            # polls the state API it serves (without it, a warning every second of the run).
            include_dashboard=True,
            runtime_env={"env_vars": {"PYTHONPATH": str(PACKAGES_ROOT), "HF_HUB_OFFLINE": "1"}},
            log_to_driver=False,
        )
    keep_library_logs_off_the_console()


def keep_library_logs_off_the_console() -> None:
    """The console shows the progress line; everything else goes to Ray's log files.

    `log_to_driver=False` (in `connect_ray`) keeps the workers' and actors' output (Serve
    access logs, Ray Data and library warnings) in Ray's per-process log files, which the
    dashboard's Logs page shows. Here the driver's own Ray Serve and Ray Data INFO lines
    are raised to warnings on the console (Ray Data still writes them to its log file).
    """
    import ray.data  # noqa: F401  (configures the ray.data logger)
    import ray.serve  # noqa: F401  (configures the ray.serve logger)

    for name in ("ray.serve", "ray.data"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setLevel(logging.WARNING)


def logical_cpus_needed(cfg: RGLCDConfig) -> float:
    """Logical CPUs the run reserves: training workers, encoder actors, the reward-service
    replicas it deploys, and room for Ray Data's read tasks."""
    workers = max(cfg.scaling.num_workers, 1)
    needed = workers * cfg.scaling.cpus_per_worker + encoder_actors(cfg) + READ_TASK_CPUS
    return needed + _reward_service_cpus(cfg)


def warn_if_too_few_cpus(available: float, needed: float) -> None:
    """A cluster with fewer logical CPUs than the run reserves waits forever unless it
    autoscales: say so, and how to start a head node that fits (a warning, not an error,
    because an autoscaling cluster adds the CPUs once asked)."""
    if available < needed:
        print(
            f"warning: the Ray cluster has {available:g} logical CPUs but this run reserves "
            f"{needed:g} (training workers, data encoders, reward-service replicas, read "
            f"tasks); unless it autoscales the run will wait for them. On one machine start "
            f"the head with `ray start --head --num-cpus={math.ceil(needed)}` (logical CPUs "
            "may exceed the cores), or lower scaling.num_workers / serve.*.num_cpus.",
            file=sys.stderr,
        )


def encoder_actors(cfg: RGLCDConfig) -> int:
    """Ray Data actors that encode images to latents (data.num_workers, at least one)."""
    return max(cfg.data.num_workers, 1)


def _reward_service_cpus(cfg: RGLCDConfig) -> float:
    """Logical CPUs of the reward-service replicas the LRM mode deploys (ingress 0.25)."""
    if not cfg.uses_lrm:
        return 0.0
    serve = cfg.serve
    scorers = sum(s.num_cpus * s.most_replicas for s in serve.scorers)
    return 0.25 + scorers + sum(v.num_cpus * v.most_replicas for v in serve.vaes.values())
