"""The scorer interface shared by the in-process trainer path and the Serve deployments.

A scorer maps a batch of images (float tensor in [0, 1], shape (N, 3, H, W)) and N prompts
to N rewards. Differentiable scorers keep the autograd graph through `__call__` (the
RG-LCD direct path, paper eq. 10-11); every scorer can also answer per item for the service,
where one bad item becomes an explicit error instead of a made-up score.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from reward_service.config import ScorerConfig


@dataclass
class ItemScore:
    """One item's result. `score is None` exactly when `error` says why (never a default 0.0)."""

    score: float | None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.score is None) == (self.error is None):
            raise ValueError("ItemScore needs exactly one of score or error")


class Scorer(ABC):
    """Base class: subclasses set the three attributes and implement `__call__`.

    A scorer that a config can name (`ScorerConfig.kind`) also declares, in its class and
    nowhere else, what the project needs to know about its kind, and is registered with
    `@register_scorer`; the registry (registry.py) derives everything else from it.
    """

    name: str
    differentiable: bool
    input_size: int  # native square input side in pixels

    kind: ClassVar[str]  # the `ScorerConfig.kind` that selects this class
    needs_checkpoint: ClassVar[bool] = False  # `ScorerConfig.checkpoint` must be set
    options: ClassVar[tuple[str, ...]] = ()  # keys `ScorerConfig.options` may hold
    # `ScorerConfig.max_batch_size` when a config leaves it unset: images per batched call.
    default_batch_size: ClassVar[int] = 16

    @classmethod
    def from_spec(cls, spec: ScorerConfig) -> Scorer:
        """Load the scorer a config entry describes (weights from local files only)."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from a config")

    @classmethod
    def native_input_size(cls, spec: ScorerConfig) -> int:
        """Input size of a configured scorer without loading weights (local files only)."""
        return cls.input_size

    @classmethod
    def runtime_env(cls) -> dict[str, Any] | None:
        """A Ray `runtime_env` of its own (an isolated environment), or None for the core one."""
        return None

    @classmethod
    def call_capacity(cls, spec: ScorerConfig) -> tuple[int, float]:
        """(calls one replica runs at once, images one call scores), for capacity planning:
        here `scorer_threads` batches of `max_batch_size` images."""
        return spec.scorer_threads, float(spec.max_batch_size)

    @abstractmethod
    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] and N prompts -> (N,) float32 rewards.

        Keeps gradients w.r.t. `images` when `differentiable` is True. Raises on failure.
        """

    def score_items(self, images: torch.Tensor, prompts: list[str]) -> list[ItemScore]:
        """Service path: no gradients, one result per item (override for per-item errors)."""
        check_batch(images, prompts)
        with torch.no_grad():
            scores = self(images, prompts)
        return [ItemScore(score=float(s)) for s in scores.detach().float().cpu()]


def check_batch(images: torch.Tensor, prompts: list[str]) -> None:
    """Validate the (images, prompts) contract every scorer relies on."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
    if images.shape[0] != len(prompts):
        raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts")
    if not torch.is_floating_point(images):
        raise ValueError(f"images must be a float tensor in [0, 1], got dtype {images.dtype}")


SCORER_CLASSES: dict[str, type[Scorer]] = {}


def register_scorer(cls: type[Scorer]) -> type[Scorer]:
    """Class decorator: make `cls.kind` a scorer kind a config can name."""
    if cls.kind in SCORER_CLASSES and SCORER_CLASSES[cls.kind] is not cls:
        raise ValueError(f"scorer kind {cls.kind!r} is registered twice")
    SCORER_CLASSES[cls.kind] = cls
    return cls
