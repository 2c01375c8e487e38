"""Differences between transformers releases that the project's code must absorb."""

from __future__ import annotations

import torch


def projected_features(output: torch.Tensor | object) -> torch.Tensor:
    """The embedding from CLIP's `get_*_features`: a tensor (transformers 4 and some 5.x
    releases) or an output object holding it in `.pooler_output` (later 5.x)."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output
