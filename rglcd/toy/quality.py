"""Image-set metrics that no recipe optimises: random-conv FID and flat-region noise.

Two symptoms of over-optimisation the paper names (docs/method.md §3) are a drift of the
samples away from real images (FID) and high-frequency noise. Both are measured here in ways
no reward and no recipe can have been trained on:

- **FID in random-conv feature space.** The features are those of a small conv net with
  frozen random weights drawn from a fixed seed (`RandomConvFeatures`): built in code, never
  trained, used by no reward, so no recipe can have moved its samples towards it. Random conv
  features see what toy scenes are made of: 1x1 mixing of the three channels answers to
  colour, 3x3 filters to edges and their sharpness, two stride-2 stages and pooling over a
  2x2 grid to where the object lies and how large it is. A test checks that it rises with
  noise, blur and shape scrambling on renders and is near 0 between two sets of renders.
  The mini CLIP's space (`rglcd.toy.metrics.miniclip_fid`) is the one the toy-clip recipes
  optimise, so their FID there flatters them.
- **Flat-region noise** (`flat_region_noise`): the RMS of each pixel's difference to the 3x3
  median of its neighbourhood, over the pixels at least `EDGE_MARGIN` px away from any edge,
  in 0-255 levels. Toy scenes are flat fills: a clean render scores 0, added noise raises
  it, and sharper (or softer) edges do not, because edges and their neighbourhood are left
  out. The older HF-noise ratio counts edge energy too, so it rises when edges sharpen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

RANDOM_CONV_SEED = 0
EDGE_THRESHOLD = 0.15  # [0, 1] units: a central difference this large (after a median) is an edge
EDGE_MARGIN = 2  # pixels around an edge that are not counted as flat
EDGE_GAIN = 5.0  # weight of the full-resolution filters, which answer to edges and noise


class RandomConvFeatures(nn.Module):
    """[0, 1] images (N, 3, H, W) -> (N, 32) features of a frozen, seeded random conv net."""

    def __init__(self, seed: int = RANDOM_CONV_SEED, width: int = 8):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        first = torch.randn(width, 3, 3, 3, generator=gen)
        half = width // 2  # half the first filters zero-mean: they see edges and noise, not fill
        first[:half] -= first[:half].mean(dim=(2, 3), keepdim=True)
        shapes = [(width, width, 3, 3), (width // 2, width, 3, 3)]
        self.weights = [first * (2 / 27) ** 0.5] + [
            torch.randn(s, generator=gen) * (2 / (s[1] * 9)) ** 0.5 for s in shapes]
        self.biases = [0.1 * torch.randn(w.shape[0], generator=gen) for w in self.weights]
        self.num_features = 4 * width  # width + width + 2x2 grid of width / 2

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float(), size=(32, 32), mode="bilinear", antialias=True)
        x = (x - 0.5) / 0.25
        pooled = []
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = F.relu(F.conv2d(x, w, b, stride=1 if i == 0 else 2, padding=1))
            pooled.append(x.mean(dim=(2, 3)) * (EDGE_GAIN if i == 0 else 1.0))  # (N, C)
        # the last stage (N, width / 2, 8, 8) also by 2x2 quadrant: where the object lies
        return torch.cat([*pooled[:2], F.adaptive_avg_pool2d(x, 2).flatten(1)], dim=1)


def random_conv_fid(real: torch.Tensor, fake: torch.Tensor, batch_size: int = 250) -> float:
    """FID between (N, 3, H, W) [0, 1] image sets in random-conv feature space (32-d)."""
    features = RandomConvFeatures()
    if min(len(real), len(fake)) <= features.num_features:
        raise ValueError(f"FID needs more than {features.num_features} images per set (the "
                         f"feature size); got {len(real)} real and {len(fake)} generated.")
    fid = FrechetInceptionDistance(feature=features, normalize=True)
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), batch_size):
            fid.update(images[i : i + batch_size].float(), real=is_real)
    return float(fid.compute())


def median3x3(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> per-channel 3x3 median, edges replicated."""
    n, c, h, w = images.shape
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    patches = F.unfold(padded.reshape(n * c, 1, h + 2, w + 2), 3)  # (N*C, 9, H*W)
    return patches.median(dim=1).values.view(n, c, h, w)


def edge_mask(images: torch.Tensor, margin: int = EDGE_MARGIN) -> torch.Tensor:
    """(N, 3, H, W) -> (N, H, W) bool: edges of the median-filtered image, grown by `margin`."""
    smooth = median3x3(images)
    padded = F.pad(smooth, (1, 1, 1, 1), mode="replicate")
    dx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]).abs()
    dy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]).abs()
    edges = (torch.maximum(dx, dy).amax(dim=1) > EDGE_THRESHOLD).float()  # (N, H, W)
    grown = F.max_pool2d(edges.unsqueeze(1), 2 * margin + 1, stride=1, padding=margin)
    return grown.squeeze(1) > 0


def flat_region_noise(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) [0, 1] -> (N,) RMS deviation from the 3x3 median in flat regions, 0-255.

    NaN for an image with no flat pixel (all edge).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) RGB in [0, 1], got {tuple(images.shape)}")
    images = images.float()
    residual = (images - median3x3(images)).square().mean(dim=1)  # (N, H, W)
    flat = (~edge_mask(images)).float()
    count = flat.sum(dim=(1, 2))
    mean_square = (residual * flat).sum(dim=(1, 2)) / count.clamp_min(1)
    rms = 255 * mean_square.sqrt()
    return torch.where(count > 0, rms, torch.full_like(rms, float("nan")))
