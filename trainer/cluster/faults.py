"""Fault injection for recovery tests: kill one training worker once, at a chosen step.

A testing hook, inert unless ``RGLCD_FAIL_AT_STEP`` is set. It exists so the resume and
worker-failure behaviour (a worker killed mid-run is restarted by Ray Train from the last
checkpoint) can be shown with a real process death instead of a mock::

    RGLCD_FAIL_AT_STEP=3 RGLCD_FAIL_MARKER=/tmp/run-a.failed \\
        python trainer/run.py scaling.max_failures=1 ...

Environment variables (read in the worker, at every step):
  RGLCD_FAIL_AT_STEP  step index at which to die, before that step's batch is drawn.
  RGLCD_FAIL_MARKER   file created just before dying; while it exists the hook does nothing,
                      so the restarted worker group runs through (required with the above).
                      A local path or an object-store URI (seen by every node).
  RGLCD_FAIL_RANK     the rank that dies (default 0).
  RGLCD_FAIL_MODE     "exit" (default): ``os._exit(1)``, the process vanishes like an OOM
                      kill; "raise": a ``RuntimeError`` (an ordinary crash with a traceback);
                      "pause": the worker stops there (for RGLCD_FAIL_PAUSE_S seconds, or for
                      good), so that a test can take its node or the store away at a known
                      step (the failure cases of the cluster rehearsal).

The driver forwards these variables to the Ray Train workers (``worker_env``), so setting
them where ``trainer/run.py`` or a test starts the run is enough.
"""

from __future__ import annotations

import os
import time

from rglcd import storage

FAIL_AT_STEP = "RGLCD_FAIL_AT_STEP"
FAIL_MARKER = "RGLCD_FAIL_MARKER"
FAIL_RANK = "RGLCD_FAIL_RANK"
FAIL_MODE = "RGLCD_FAIL_MODE"
FAIL_PAUSE_S = "RGLCD_FAIL_PAUSE_S"
FAULT_VARIABLES = (FAIL_AT_STEP, FAIL_MARKER, FAIL_RANK, FAIL_MODE, FAIL_PAUSE_S)
MODES = ("exit", "raise", "pause")


class InjectedFault(RuntimeError):
    """The crash ``maybe_fail`` raises in ``RGLCD_FAIL_MODE=raise``."""


def worker_env() -> dict:
    """A Ray ``runtime_env`` carrying the fault variables set here ({} when none is set)."""
    env_vars = {name: os.environ[name] for name in FAULT_VARIABLES if name in os.environ}
    return {"env_vars": env_vars} if env_vars else {}


def _settings() -> tuple[int, str, int, str] | None:
    at_step = os.environ.get(FAIL_AT_STEP)
    if not at_step:
        return None
    marker = os.environ.get(FAIL_MARKER)
    mode = os.environ.get(FAIL_MODE, "exit")
    if not marker:
        raise ValueError(
            f"{FAIL_AT_STEP} is set but {FAIL_MARKER} is not: name a file the hook may create, "
            "so the injected failure happens once and the restarted run can finish."
        )
    if mode not in MODES:
        raise ValueError(f"{FAIL_MODE}={mode!r} is not one of {MODES}.")
    return int(at_step), marker, int(os.environ.get(FAIL_RANK, "0")), mode


def maybe_fail(step: int, rank: int) -> None:
    """Die once at the configured step and rank (a no-op unless ``RGLCD_FAIL_AT_STEP`` is set)."""
    settings = _settings()
    if settings is None:
        return
    at_step, marker, at_rank, mode = settings
    if step != at_step or rank != at_rank or storage.exists(marker):
        return
    storage.write_text(marker, f"injected failure at step {step} on rank {rank} "
                       f"(pid {os.getpid()})\n")
    if mode == "pause":
        deadline = time.monotonic() + float(os.environ.get(FAIL_PAUSE_S, "inf"))
        while time.monotonic() < deadline:  # no limit: until the node is taken away
            time.sleep(0.5)
        return
    if mode == "raise":
        raise InjectedFault(f"injected failure at step {step} on rank {rank}")
    os._exit(1)  # no cleanup, no exception: the worker process is simply gone
