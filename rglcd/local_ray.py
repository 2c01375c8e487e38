"""A Ray instance this project starts on its own is private to the machine by default.

Left alone, a new local Ray's control plane (GCS, raylet, job and runtime-env agents) listens on
every network interface; with token auth off, anyone who reaches the machine could submit
jobs to it. Ray's single-machine mode (the env variable below set to 0, Ray's own switch for
machines that do not join clusters) makes every one of those servers bind to 127.0.0.1 and
makes `ray start --address` on another node refuse to join. Ray reads the variable when it is
imported, so this must run before the first `import ray` of the process.
"""

from __future__ import annotations

import os
import sys

SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def keep_local_ray_on_loopback(expose: bool = False) -> bool:
    """Make a Ray started by this process bind to 127.0.0.1; True when that is in effect.

    Does nothing when attaching to an existing cluster (`RAY_ADDRESS` set), when `expose` is
    True, when the operator has set the variable already (their choice wins), or when Ray was
    imported before this call (too late to take effect: False).
    """
    if expose or os.environ.get("RAY_ADDRESS") or os.environ.get("RAY_JOB_ID"):
        return False
    if "ray" in sys.modules and SINGLE_MACHINE_ENV not in os.environ:
        return False
    os.environ.setdefault(SINGLE_MACHINE_ENV, "0")
    return os.environ[SINGLE_MACHINE_ENV] == "0"
