"""Dashboard metrics of the reward service (Ray's metrics agent -> /metrics, Prometheus format).

`ray.serve.metrics` adds the deployment, replica and application tags on its own; counters are
exported with a `_total` suffix. Metric names start with `rewards_`; create these objects
inside a replica (`__init__`), not at import time.
"""

from __future__ import annotations

from ray.serve import metrics

BATCH_SIZE_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
LATENCY_BOUNDARIES_S = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]


class ScorerMetrics:
    """Per scorer replica: images per batch, batch latency, items waiting, per-item errors."""

    def __init__(self, scorer: str) -> None:
        self._tags = {"scorer": scorer}
        self.batch_size = metrics.Histogram(
            "rewards_batch_size",
            description="Images scored per scorer call.",
            boundaries=BATCH_SIZE_BOUNDARIES,
            tag_keys=("scorer",),
        )
        self.batch_latency = metrics.Histogram(
            "rewards_batch_latency_s",
            description="Seconds per scorer call (one batch).",
            boundaries=LATENCY_BOUNDARIES_S,
            tag_keys=("scorer",),
        )
        self.queue_length = metrics.Gauge(
            "rewards_queue_length",
            description="Images waiting in this replica for a batch slot.",
            tag_keys=("scorer",),
        )
        self.item_errors = metrics.Counter(
            "rewards_item_errors",
            description="Items answered with an explicit error instead of a score.",
            tag_keys=("scorer", "kind"),
        )

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size, tags=self._tags)
        self.batch_latency.observe(seconds, tags=self._tags)

    def set_queue_length(self, items: int) -> None:
        self.queue_length.set(items, tags=self._tags)

    def count_item_errors(self, kind: str, count: int = 1) -> None:
        if count:
            self.item_errors.inc(count, tags={**self._tags, "kind": kind})


class IngressMetrics:
    """Per ingress replica: request latency and requests by model and HTTP status."""

    def __init__(self) -> None:
        self.latency = metrics.Histogram(
            "rewards_request_latency_s",
            description="Seconds from request arrival to answer, POST /score.",
            boundaries=LATENCY_BOUNDARIES_S,
            tag_keys=("model",),
        )
        self.requests = metrics.Counter(
            "rewards_requests",
            description="POST /score requests by model and HTTP status (errors by kind).",
            tag_keys=("model", "status"),
        )

    def observe(self, model: str, status: int, seconds: float) -> None:
        self.requests.inc(1, tags={"model": model, "status": str(status)})
        if status == 200:
            self.latency.observe(seconds, tags={"model": model})
