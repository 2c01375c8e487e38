"""The scorer interface shared by the in-process trainer path and the Serve deployments.

A scorer maps a batch of images (float tensor in [0, 1], shape (N, 3, H, W)) and N prompts
to N rewards. Differentiable scorers keep the autograd graph through `__call__` (the
RG-LCD direct path, paper eq. 10-11); every scorer can also answer per item for the service,
where one bad item becomes an explicit error instead of a made-up score.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch


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
    """Base class: subclasses set the three attributes and implement `__call__`."""

    name: str
    differentiable: bool
    input_size: int  # native square input side in pixels

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
