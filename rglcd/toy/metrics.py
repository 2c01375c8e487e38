"""Metrics of the miniature world: FID in mini-CLIP feature space and the HF-noise ratio.

FID uses torchmetrics' ``FrechetInceptionDistance`` (its matrix square root and statistics)
with the mini CLIP's image tower as the feature extractor instead of InceptionV3, which has
never seen toy scenes. The high-frequency-energy ratio is the paper's over-optimisation
symptom (reward hacking shows up as high-frequency noise) as a number: the share of spectral
energy above a cut-off in generated images divided by the same share in real images, ~1 for
real images and > 1 for noisy ones.
"""

from __future__ import annotations

import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from transformers import CLIPModel

from rglcd.toy.miniclip import MiniClipFeatures

HF_CUTOFF = 0.25  # cycles per pixel; Nyquist is 0.5


def miniclip_fid(real: torch.Tensor, fake: torch.Tensor, model: CLIPModel,
                 batch_size: int = 250) -> float:
    """FID between two sets of (N, 3, H, W) [0, 1] images in mini-CLIP image-feature space.

    Needs more images per set than feature dimensions (64) for a full-rank covariance.
    """
    dims = model.config.projection_dim
    if min(len(real), len(fake)) <= dims:
        raise ValueError(f"FID needs more than {dims} images per set (the feature size); "
                         f"got {len(real)} real and {len(fake)} generated.")
    fid = FrechetInceptionDistance(feature=MiniClipFeatures(model), normalize=True)
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), batch_size):
            fid.update(images[i : i + batch_size].float(), real=is_real)
    return float(fid.compute())


def high_frequency_fraction(images: torch.Tensor, cutoff: float = HF_CUTOFF) -> torch.Tensor:
    """(N, C, H, W) -> (N,) share of (mean-removed) spectral energy above `cutoff` cycles/px."""
    if not 0 < cutoff < 0.5:
        raise ValueError(f"cutoff={cutoff} must lie in (0, 0.5) cycles per pixel (0.5 = Nyquist).")
    x = images.float() - images.float().mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().square().sum(dim=1)  # (N, H, W)
    fy = torch.fft.fftfreq(x.shape[-2]).view(-1, 1)
    fx = torch.fft.fftfreq(x.shape[-1]).view(1, -1)
    high = (fx.square() + fy.square()).sqrt() > cutoff  # (H, W)
    return (power * high).sum(dim=(-2, -1)) / power.sum(dim=(-2, -1)).clamp_min(1e-12)


def hf_noise_ratio(generated: torch.Tensor, real: torch.Tensor,
                   cutoff: float = HF_CUTOFF) -> float:
    """Mean high-frequency share of `generated` over that of `real`: ~1 when they match."""
    gen = high_frequency_fraction(generated, cutoff).mean()
    ref = high_frequency_fraction(real, cutoff).mean()
    return float(gen / ref)
