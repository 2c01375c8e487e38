"""Degradations that keep a toy scene's truth: what generated images get wrong in look only.

Each takes (N, 3, H, W) images in [0, 1] and a seeded generator and returns a copy whose
caption is still right (the colours stay nearest their palette colour, the shape stays that
shape), so a judge's reading of it can be checked against the renderer's known truth:

- colour_shift: every pixel of an image moved by one random RGB offset (up to
  ``COLOUR_SHIFT`` a channel), a tint as a decoder's colour drift makes;
- warp: a smooth random displacement field of up to ``WARP_PIXELS`` px (nearest-neighbour
  resampling keeps the fills flat), wobbly outlines and rounded corners;
- blur and noise: `orchestration.toy_build.degrade` (soft edges; pixel noise).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

COLOUR_SHIFT = 0.08  # [0, 1] units a channel
WARP_PIXELS = 1.0


def colour_shift(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    offset = (2 * torch.rand(len(images), 3, 1, 1, generator=gen) - 1) * COLOUR_SHIFT
    return (images + offset).clamp(0, 1)


def warp(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Resample along a smooth random field: 4x4 control offsets, bicubic in between."""
    n, _, h, w = images.shape
    control = (2 * torch.rand(n, 2, 4, 4, generator=gen) - 1) * WARP_PIXELS
    field = F.interpolate(control, size=(h, w), mode="bicubic", align_corners=True)  # (N, 2, H, W)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")
    x = (xs + field[:, 0] + 0.5) / w * 2 - 1  # grid_sample's [-1, 1], pixel centres
    y = (ys + field[:, 1] + 0.5) / h * 2 - 1
    grid = torch.stack([x, y], dim=-1)  # (N, H, W, 2)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="border", align_corners=False)
