"""How many replicas a scorer or VAE deployment runs, and where (plain functions; no Ray).

A deployment runs `num_replicas` replicas, or, with `autoscaling`, between `num_replicas`
and `autoscaling.max_replicas`: Serve adds replicas while each one holds more than
`target_ongoing_requests` requests (eight train workers' expert requests arrive together
every step) and removes them after a quiet `downscale_delay_s`. `max_replicas_per_node`
spreads the replicas over the nodes (one replica per node's GPU, say), so the decode and
scoring work of the whole run is not left to one node's accelerator.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from rglcd.config_base import StrictModel


class Autoscaling(StrictModel):
    """Serve's `autoscaling_config` for one deployment (its fields, with the same names)."""

    max_replicas: int = Field(ge=1, description="Most replicas; num_replicas is the fewest.")
    target_ongoing_requests: float = Field(
        2.0, gt=0, description="Requests per replica (running and queued) Serve scales toward."
    )
    upscale_delay_s: float = Field(
        5.0, ge=0, description="Load must stay above the target this long before a replica is "
        "added (Serve's default, 30 s, is many training steps).",
    )
    downscale_delay_s: float = Field(120.0, ge=0)
    look_back_period_s: float = Field(30.0, gt=0, description="Window the load is averaged over.")


class Replicas(StrictModel):
    """The replica fields a scorer and a VAE deployment share."""

    num_replicas: int = Field(1, ge=1, description="Replicas (the fewest, with autoscaling).")
    autoscaling: Autoscaling | None = Field(
        None, description="Scale between num_replicas and autoscaling.max_replicas with load."
    )
    max_replicas_per_node: int | None = Field(
        None, ge=1, le=100, description="Spread replicas over nodes: at most this many per node."
    )

    @model_validator(mode="after")
    def _replica_range(self):
        if self.autoscaling is not None and self.autoscaling.max_replicas < self.num_replicas:
            raise ValueError(
                f"autoscaling.max_replicas ({self.autoscaling.max_replicas}) must be >= "
                f"num_replicas ({self.num_replicas}), the fewest replicas it scales down to"
            )
        return self

    @property
    def most_replicas(self) -> int:
        """The replicas the deployment may run at its busiest."""
        return self.autoscaling.max_replicas if self.autoscaling else self.num_replicas


def replica_options(spec: Replicas) -> dict[str, Any]:
    """The `Deployment.options(...)` keywords for `spec`'s replica count and spread."""
    options: dict[str, Any] = {}
    if spec.autoscaling is None:
        options["num_replicas"] = spec.num_replicas
    else:
        options["autoscaling_config"] = {
            "min_replicas": spec.num_replicas,
            "initial_replicas": spec.num_replicas,
            **spec.autoscaling.model_dump(),
        }
    if spec.max_replicas_per_node is not None:
        options["max_replicas_per_node"] = spec.max_replicas_per_node
    return options
