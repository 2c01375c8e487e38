"""Per-step metrics: ``metrics.jsonl``, Ray dashboard metrics, and a driver-side progress line.

``MetricsLogger`` (one per worker; only rank 0 writes) appends one JSON line
per step to ``<output_dir>/metrics.jsonl`` and publishes numeric values to
``ray.util.metrics`` (Gauge ``rglcd_train_metric`` and Counter ``rglcd_train_count``, tag
keys ``run`` and ``name``) for the Ray dashboard. Outside a Ray worker or driver it falls back
to the file alone and logs why. On resume it first drops lines with ``step >= start_step``,
so a rerun from a checkpoint leaves no duplicate steps.

The driver cannot see per-step results while ``TorchTrainer.fit()`` runs (Ray Train V2 keeps
only metrics reported with a checkpoint), so ``MetricsFollower`` tails ``metrics.jsonl`` and
feeds a tqdm ``ProgressLine``; the output directory is a local path, shared storage or an
object-store URI the driver can read.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from rglcd import storage

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
GAUGE_NAME = "rglcd_train_metric"
COUNTER_NAME = "rglcd_train_count"
TAG_KEYS = ("run", "name")
# Metrics that are per-step increments; they are summed (dashboard counter, run report).
SKIPPED_REWARD_UPDATES = "reward_updates_skipped"
COUNTER_KEYS = (SKIPPED_REWARD_UPDATES,)
PROGRESS_KEYS = ("loss", "lcd_loss", "reward_mean")


def _plain(value: Any) -> Any:
    """JSON-able scalar: 0-d tensors / numpy scalars become Python numbers."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_metrics(path: str | Path) -> list[dict]:
    """All complete, valid lines of a metrics file, local or in object storage (a torn last
    line from a crash is skipped)."""
    if not storage.is_file(str(path)):
        return []
    rows = []
    for line in storage.read_text(str(path)).splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def truncate_metrics(path: str | Path, start_step: int) -> int:
    """Rewrite `path` keeping only lines with ``step < start_step``; return how many were kept."""
    path = Path(path)
    if not path.exists():
        return 0
    kept = [row for row in read_metrics(path) if row["step"] < start_step]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in kept)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return len(kept)


class _RayPublisher:
    """Gauge + Counter in ``ray.util.metrics``; created only inside a connected Ray process."""

    def __init__(self, run_name: str, counter_keys: Iterable[str]) -> None:
        from ray.util.metrics import Counter, Gauge

        self.run_name = run_name
        self.counter_keys = set(counter_keys)
        self.gauge = Gauge(GAUGE_NAME, "RG-LCD training metric, last value", TAG_KEYS)
        self.counter = Counter(COUNTER_NAME, "RG-LCD training counts (steps, skips)", TAG_KEYS)

    def publish(self, metrics: Mapping[str, Any]) -> None:
        self.counter.inc(1.0, tags={"run": self.run_name, "name": "steps"})
        for name, value in metrics.items():
            if not _is_number(value):
                continue
            tags = {"run": self.run_name, "name": name}
            self.gauge.set(float(value), tags=tags)
            if name in self.counter_keys and value > 0:
                self.counter.inc(float(value), tags=tags)


def _ray_publisher(run_name: str, counter_keys: Iterable[str]) -> _RayPublisher | None:
    try:
        import ray
    except ImportError:
        logger.info("ray is not installed: metrics go to %s only.", METRICS_FILE)
        return None
    if not ray.is_initialized():
        logger.info("Not inside a Ray job or worker: metrics go to %s only.", METRICS_FILE)
        return None
    return _RayPublisher(run_name, counter_keys)


class MetricsLogger:
    """Per-step metrics to ``metrics.jsonl`` (rank 0) and to the Ray dashboard.

    `start_step` is the first step this run will log (the resumed checkpoint's step, or 0);
    existing lines at or after it are dropped before appending. Other ranks log nothing.
    `output_dir` may be an object-store URI: the file is then kept in a local temporary
    folder (continuing a resumed run's copy) and uploaded after every logged line.
    """

    def __init__(
        self,
        output_dir: str | Path,
        rank: int = 0,
        run_name: str = "rglcd",
        start_step: int = 0,
        counter_keys: Iterable[str] = COUNTER_KEYS,
        publish_to_ray: bool = True,
    ) -> None:
        self.location = storage.join(str(output_dir), METRICS_FILE)
        self.active = rank == 0
        self._handle: TextIO | None = None
        self._ray: _RayPublisher | None = None
        self._staging: tempfile.TemporaryDirectory | None = None
        if not self.active:
            return
        if storage.is_local(self.location):
            self.path = Path(storage.local_path(self.location))
        else:
            self._staging = tempfile.TemporaryDirectory(prefix="rglcd-metrics-")
            self.path = Path(self._staging.name) / METRICS_FILE
            if storage.is_file(self.location):
                self.path.write_bytes(storage.read_bytes(self.location))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        truncate_metrics(self.path, start_step)
        self._handle = self.path.open("a", encoding="utf-8")
        if publish_to_ray:
            self._ray = _ray_publisher(run_name, counter_keys)

    @property
    def publishes_to_ray(self) -> bool:
        return self._ray is not None

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append ``{"step": step, **metrics}`` (flushed) and publish the numeric values."""
        if not self.active:
            return
        assert self._handle is not None, "log() after close()"
        row = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        self._handle.write(json.dumps(row) + "\n")
        self._handle.flush()
        if self._staging is not None:
            storage.upload_file(self.path, self.location)
        if self._ray is not None:
            self._ray.publish(row)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._staging is not None:
            storage.upload_file(self.path, self.location)
            self._staging.cleanup()
            self._staging = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def format_postfix(metrics: Mapping[str, Any], keys: Iterable[str] = PROGRESS_KEYS) -> str:
    """``"loss=0.0123 reward_mean=0.41"`` for the keys present among `metrics`."""
    parts = [f"{k}={metrics[k]:.4g}" for k in keys if _is_number(metrics.get(k))]
    return " ".join(parts)


class ProgressLine:
    """A tqdm line on the driver, advanced to the step of each result fed to ``update``."""

    def __init__(
        self,
        total_steps: int,
        start_step: int = 0,
        keys: Iterable[str] = PROGRESS_KEYS,
        file: TextIO | None = None,
    ) -> None:
        self.keys = tuple(keys)
        self.bar = tqdm(
            total=total_steps,
            initial=start_step,
            desc="RG-LCD",
            unit="step",
            file=file if file is not None else sys.stderr,
            dynamic_ncols=True,
            mininterval=0.5,
        )

    @property
    def step(self) -> int:
        return int(self.bar.n)

    def update(self, metrics: Mapping[str, Any]) -> None:
        """Move to ``metrics["step"] + 1`` steps done and show the chosen metrics."""
        done = int(metrics["step"]) + 1
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)
        self.bar.set_postfix_str(format_postfix(metrics, self.keys), refresh=False)

    def close(self) -> None:
        self.bar.close()


class MetricsFollower(threading.Thread):
    """Tail a ``metrics.jsonl`` in the background and feed each new line to a ``ProgressLine``.

    The file may be in object storage (re-read whole at each poll: it is small).

    Use around the blocking ``trainer.fit()``::

        follower = MetricsFollower(output_dir / METRICS_FILE, ProgressLine(total_steps))
        follower.start()
        try:
            result = trainer.fit()
        finally:
            follower.stop()
    """

    def __init__(self, path: str | Path, progress: ProgressLine, poll_s: float = 1.0) -> None:
        super().__init__(name="metrics-follower", daemon=True)
        self.location = str(path)
        self.progress = progress
        self.poll_s = poll_s
        self._stop_event = threading.Event()
        self._offset = 0
        self._partial = ""

    def poll(self) -> int:
        """Read lines appended since the last poll; return how many metrics rows were fed."""
        try:
            data = storage.read_bytes(self.location) if storage.is_file(self.location) else b""
        except OSError:  # the store is unreachable for a moment: try again at the next poll
            return 0
        if len(data) < self._offset:  # rewritten by a resume: start over
            self._offset, self._partial = 0, ""
        chunk = data[self._offset:].decode("utf-8", errors="replace")
        self._offset = len(data)
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()  # an unfinished last line waits for the next poll
        fed = 0
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "step" in row:
                self.progress.update(row)
                fed += 1
        return fed

    def run(self) -> None:
        while not self._stop_event.wait(self.poll_s):
            self.poll()

    def stop(self) -> None:
        """Stop tailing, read what is left, and close the progress line."""
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=5.0)
        self.poll()
        self.progress.close()
