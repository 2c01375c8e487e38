"""Degraded copies of clean toy scenes: the hard-negative images of the reward-clip stage.

Web-trained CLIP has seen noisy, blurred and smudged pictures under captions that say so, so
the plain caption fits the clean picture best. The mini CLIP saw only clean renders and has
no such preference; these copies teach it one (objective "hard-negatives" of stage
reward-clip). Each copy takes one or two of four degradations, drawn per image:

- blotches: a fraction of the object's pixels take another palette colour (an impure fill);
- speckle: a few background pixels take the object's colour (stray marks off the object);
- noise: Gaussian pixel noise;
- blur: a small Gaussian blur (soft edges, colours between the palette's).

Functions of (N, 3, H, W) images in [0, 1]; the object is every pixel whose palette colour
differs from the border's most frequent one (the toy judge's rule), exact on clean renders.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rglcd.toy.judge import palette_and_background, to_uint8_images
from rglcd.toy.scenes import PALETTE

KINDS = ("blotches", "speckle", "noise", "blur")
BLOTCH_FRACTION = (0.03, 0.3)  # of the object's pixels
SPECKLE_PIXELS = (1, 8)
NOISE_STD = (0.01, 0.1)  # [0, 1] pixel units
BLUR_SIGMA = (0.5, 1.0)  # pixels


def _palette(device: torch.device) -> torch.Tensor:
    return torch.as_tensor(PALETTE, dtype=torch.float32, device=device) / 255.0  # (8, 3)


def object_masks(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool: pixels whose palette colour is not the image's background colour, as
    the toy judge finds them (`rglcd.toy.judge.palette_and_background`)."""
    classes, _, background = palette_and_background(to_uint8_images(images))
    return torch.from_numpy(classes != np.array(background)[:, None, None])


def _uniform(n: int, bounds: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def blotches(images: torch.Tensor, obj: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Recolour a random fraction of each object's pixels with one other palette colour."""
    n = len(images)
    fraction = _uniform(n, BLOTCH_FRACTION, gen).view(n, 1, 1)
    hit = obj & (torch.rand(obj.shape, generator=gen) < fraction)
    current = torch.from_numpy(palette_and_background(to_uint8_images(images))[0])
    other = (current + torch.randint(1, len(PALETTE), (n, 1, 1), generator=gen)) % len(PALETTE)
    colours = _palette(images.device)[other].permute(0, 3, 1, 2)  # (N, 3, H, W)
    return torch.where(hit.unsqueeze(1), colours, images)


def speckle(images: torch.Tensor, obj: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Paint 1-8 random background pixels in the object's colour."""
    n, _, h, w = images.shape
    counts = torch.randint(SPECKLE_PIXELS[0], SPECKLE_PIXELS[1] + 1, (n,), generator=gen)
    scores = torch.rand(n, h * w, generator=gen).masked_fill(obj.flatten(1), 2.0)
    rank = scores.argsort(dim=1).argsort(dim=1).view(n, h, w)  # background pixels first
    hit = (rank < counts.view(n, 1, 1)) & ~obj
    weights = obj.unsqueeze(1).float()
    object_colour = (images * weights).sum((2, 3)) / weights.sum((2, 3)).clamp_min(1)
    return torch.where(hit.unsqueeze(1), object_colour[:, :, None, None].expand_as(images), images)


def noise(images: torch.Tensor, obj: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    std = _uniform(len(images), NOISE_STD, gen).view(-1, 1, 1, 1)
    return (images + std * torch.randn(images.shape, generator=gen)).clamp(0, 1)


def blur(images: torch.Tensor, obj: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Separable Gaussian blur, one sigma per image, reflect-padded."""
    sigma = _uniform(len(images), BLUR_SIGMA, gen).view(-1, 1)
    offsets = torch.arange(-2, 3, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)  # (N, 5)
    n, c, h, w = images.shape
    flat = images.reshape(1, n * c, h, w)
    weight = kernel.repeat_interleave(c, 0)  # one kernel per (image, channel)
    flat = F.conv2d(F.pad(flat, (2, 2, 0, 0), mode="reflect"), weight.view(n * c, 1, 1, 5),
                    groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, 2, 2), mode="reflect"), weight.view(n * c, 1, 5, 1),
                    groups=n * c)
    return flat.view(n, c, h, w)


DEGRADATIONS = {"blotches": blotches, "speckle": speckle, "noise": noise, "blur": blur}


def degrade(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A degraded copy of each clean image: one or two of KINDS, drawn per image."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) RGB in [0, 1], got {tuple(images.shape)}")
    images = images.detach().float().cpu()
    obj = object_masks(images)
    first = torch.randint(0, len(KINDS), (len(images),), generator=gen)
    second = torch.where(torch.rand(len(images), generator=gen) < 0.5,
                         torch.randint(0, len(KINDS), (len(images),), generator=gen), first)
    out = images.clone()
    for k, kind in enumerate(KINDS):  # a fixed order: blotches and speckle before noise, blur
        chosen = (first == k) | (second == k)
        if chosen.any():
            out[chosen] = DEGRADATIONS[kind](out[chosen], obj[chosen], gen)
    return out
