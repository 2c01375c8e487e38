"""A table row's figures, folded in chunk by chunk (no Ray, no I/O).

Per row the driver keeps only what the table needs: one score per (item, scorer) (floats),
FID feature moments (image_metrics.FeatureMoments), running means of the high-frequency
fractions and of the flat-region noise, the sampling time, and the few images its sample
grids show. Never the row's images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from orchestration.evaluation.image_metrics import FeatureMoments
from orchestration.evaluation.items import Item


@dataclass
class ImageFigures:
    """Per-image figures a worker computes on a chunk of B images; None = not computed."""

    features: torch.Tensor | None = None  # (B, D) FID features
    hf: torch.Tensor | None = None  # (B,) high-frequency fractions
    flat: torch.Tensor | None = None  # (B,) flat-region noise, NaN = no flat pixel


@dataclass
class RunningMean:
    """Sum and count of the finite values folded in; NaN values are counted as `skipped`."""

    total: float = 0.0
    count: int = 0
    skipped: int = 0

    def add(self, values: torch.Tensor) -> None:
        finite = torch.isfinite(values)
        self.total += float(values[finite].double().sum())
        self.count += int(finite.sum())
        self.skipped += len(values) - int(finite.sum())

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    @property
    def seen(self) -> int:
        return self.count + self.skipped


@dataclass
class RowAccumulator:
    num_items: int
    scorers: list[str]
    grid_items: set[int]  # item indices shown in the grids
    scores: dict[str, np.ndarray] = field(init=False)  # scorer -> (N,), NaN = missing
    moments: FeatureMoments = field(default_factory=FeatureMoments)
    hf: RunningMean = field(default_factory=RunningMean)
    flat: RunningMean = field(default_factory=RunningMean)
    seconds: float = 0.0
    done: int = 0
    grid: dict[int, np.ndarray] = field(default_factory=dict)  # item -> (H, W, 3) uint8

    def __post_init__(self) -> None:
        self.scores = {name: np.full(self.num_items, np.nan) for name in self.scorers}

    def add(self, items: list[Item], images: np.ndarray | None, scores: dict[str, np.ndarray],
            figures: ImageFigures, seconds: float = 0.0) -> None:
        index = np.array([item.index for item in items])
        for name, values in scores.items():
            self.scores[name][index] = values
        if figures.features is not None:
            self.moments.add(figures.features)
        for values, mean in ((figures.hf, self.hf), (figures.flat, self.flat)):
            if values is not None:
                mean.add(values)
        self.seconds += seconds
        self.done += len(items)
        for k, item in enumerate(items):
            if item.index in self.grid_items:
                self.grid[item.index] = images[k].copy()

    def grid_stack(self) -> np.ndarray:
        """(G, H, W, 3) grid images in item order."""
        return np.stack([self.grid[k] for k in sorted(self.grid)])


def grid_item_indices(items: list[Item], num_seeds: int, grid_prompts: int) -> set[int]:
    """The first `grid_prompts` prompts of every seed: the items the sample grids show."""
    per_seed = len(items) // num_seeds
    shown = min(grid_prompts, per_seed)
    return {s * per_seed + p for s in range(num_seeds) for p in range(shown)}
