"""Differentiable image preprocessing for reward models (docs/method.md §5).

The reward models' own pipelines go through PIL / `ToTensor` / numpy image processors, which
quantise to uint8 and cut the autograd graph. Here every step is a tensor op, so rewards keep
their gradient w.r.t. the generated pixels (paper eq. 10-11). Resizing always passes
`antialias=True` explicitly: torchvision changed that default between versions and it changes
reward gradients (docs/method.md §6). PIL's bicubic filter always antialiases, so this is
also the closest tensor match to the packages' PIL paths.

Two recipes cover the reward models of docs/method.md §5:
  "shortest-crop": shortest side -> size (bicubic), center crop  (CLIPScore, PickScore, ImageReward)
  "longest-pad":   longest side -> size (bicubic), zero-pad      (HPSv2.1, open_clip "longest")
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# OpenAI CLIP normalisation of CLIP, PickScore, HPSv2.1 and ImageReward (docs/method.md §5).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESIZE_MODES = ("shortest-crop", "longest-pad")
INTERPOLATIONS = ("bicubic", "bilinear")
# Longest over shortest side a scorer accepts: past it the shortest-side resize would make an
# image of size x (ratio * size) pixels (the service's own, tighter limit is checked earlier).
MAX_ASPECT_RATIO = 64.0


@dataclass(frozen=True)
class PreprocessRecipe:
    """How one reward model wants its pixels: square side, resize mode, normalisation."""

    size: int
    mode: str = "shortest-crop"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    interpolation: str = "bicubic"
    antialias: bool = True  # kept explicit on purpose (docs/method.md §6)

    def __post_init__(self) -> None:
        if self.mode not in RESIZE_MODES:
            raise ValueError(f"resize mode {self.mode!r} is unknown; use one of {RESIZE_MODES}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation {self.interpolation!r} is unknown; use one of {INTERPOLATIONS}"
            )
        if self.size < 1:
            raise ValueError(f"preprocessing size must be >= 1, got {self.size}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need one value per RGB channel")


def resize(
    images: torch.Tensor,
    height: int,
    width: int,
    antialias: bool = True,
    interpolation: str = "bicubic",
) -> torch.Tensor:
    """Resize (N, 3, H, W) to (N, 3, height, width), clamped back to [0, 1].

    The clamp mirrors the uint8 round trip of the PIL paths (bicubic overshoots at edges).
    """
    if images.shape[-2:] == (height, width):
        return images
    out = F.interpolate(
        images, size=(height, width), mode=interpolation, align_corners=False, antialias=antialias
    )
    return out.clamp(0.0, 1.0)


def _scaled_side(side: int, other: int, target: int) -> int:
    """Length of `other` when `side` is scaled to `target` (torchvision's rounding: floor)."""
    return max(1, int(target * other / side))


def resize_shortest_side(
    images: torch.Tensor, size: int, antialias: bool = True, interpolation: str = "bicubic"
) -> torch.Tensor:
    """Scale so the shorter side equals `size`, keeping the aspect ratio."""
    h, w = images.shape[-2:]
    if h <= w:
        return resize(images, size, _scaled_side(h, w, size), antialias, interpolation)
    return resize(images, _scaled_side(w, h, size), size, antialias, interpolation)


def resize_longest_side(
    images: torch.Tensor, size: int, antialias: bool = True, interpolation: str = "bicubic"
) -> torch.Tensor:
    """Scale so the longer side equals `size`, keeping the aspect ratio (open_clip rounding)."""
    h, w = images.shape[-2:]
    ratio = max(h, w) / size
    height, width = max(1, round(h / ratio)), max(1, round(w / ratio))
    return resize(images, height, width, antialias, interpolation)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Central `size` x `size` window (both sides must be >= size)."""
    h, w = images.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot center-crop {h}x{w} to {size}; resize first")
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return images[..., top : top + size, left : left + size]


def pad_to_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad (black pixels, before normalisation) to `size` x `size`, image centred.

    Same split as open_clip's `center_crop_or_pad`: the extra odd pixel goes right / bottom.
    """
    h, w = images.shape[-2:]
    if h > size or w > size:
        raise ValueError(f"cannot pad {h}x{w} to {size}; resize first")
    left, top = (size - w) // 2, (size - h) // 2
    return F.pad(images, (left, size - w - left, top, size - h - top), value=0.0)


def normalize(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """Per-channel (x - mean) / std on [0, 1] pixels."""
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean_t) / std_t


def check_aspect_ratio(images: torch.Tensor, limit: float = MAX_ASPECT_RATIO) -> None:
    """Refuse images so thin that a shortest-side resize would allocate a huge tensor."""
    h, w = images.shape[-2:]
    if min(h, w) < 1 or max(h, w) / min(h, w) > limit:
        raise ValueError(
            f"images of {h}x{w} have an aspect ratio above {limit:g}; crop or pad them closer "
            "to square before scoring"
        )


def preprocess(images: torch.Tensor, recipe: PreprocessRecipe) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 3, size, size) normalised model input, graph kept."""
    check_aspect_ratio(images)
    resize_kw = {"antialias": recipe.antialias, "interpolation": recipe.interpolation}
    if recipe.mode == "shortest-crop":
        square = center_crop(resize_shortest_side(images, recipe.size, **resize_kw), recipe.size)
    else:
        square = pad_to_square(resize_longest_side(images, recipe.size, **resize_kw), recipe.size)
    return normalize(square, recipe.mean, recipe.std)
