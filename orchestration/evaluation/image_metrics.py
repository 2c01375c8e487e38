"""Image-set metrics: FID against reference images, and the high-frequency-noise ratio.

FID (Heusel et al.) is torchmetrics' ``FrechetInceptionDistance`` (no hand-written matrix
square root) with one of two feature extractors:

- ``miniclip`` (toy world): the miniature CLIP's 64-d image embeddings
  (``rglcd.toy.miniclip.MiniClipFeatures``). Numbers are only comparable within this space.
- ``inception`` (real data): the standard 2048-d pool3 features of the FID Inception network.
  It needs the ``torch-fidelity`` package and the weights file
  ``pt_inception-2015-12-05-6726825d.pth`` on local disk (``fid.inception_weights``); nothing
  is downloaded. Neither is available on this project's CI machines, so that path is untested
  here. With few images (say < 2048) Inception FID is biased upwards: compare models only at
  equal image counts.

HF-noise ratio (the over-optimisation symptom of docs/method.md §3): the share of an image's
spectral energy above a radial frequency cut-off (``rglcd.toy.metrics.high_frequency_fraction``),
averaged over the generated set and divided by the same average over the reference set. About
1 for images as clean as real ones; above 1 with added noise. Generated images are resized to
the reference resolution first so the frequencies match.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchmetrics.image.fid import FrechetInceptionDistance

from orchestration.evaluation.config import FidConfig, ReferenceConfig
from orchestration.evaluation.generation import to_float
from rglcd.toy.metrics import high_frequency_fraction
from rglcd.toy.miniclip import MiniClipFeatures, load_miniclip
from rglcd.toy.scenes import render, sample_scenes

__all__ = ["FidScorer", "hf_noise_ratio", "high_frequency_fraction", "load_reference_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def load_reference_images(cfg: ReferenceConfig) -> np.ndarray:
    """(N, H, W, 3) uint8 reference images: rendered toy scenes or files of a folder."""
    if cfg.source is None:
        raise ValueError("reference.source is null; set it to 'toy:<split>' or an image folder")
    if cfg.source.startswith("toy:"):
        scenes = sample_scenes(cfg.source.removeprefix("toy:"), cfg.num_images, seed=cfg.seed)
        return np.stack([render(scene) for scene in scenes])
    folder = Path(cfg.source)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < 2:
        raise ValueError(
            f"reference.source={cfg.source!r} holds {len(files)} image(s); FID needs at least 2 "
            f"({', '.join(IMAGE_SUFFIXES)} files) or use 'toy:<split>'"
        )
    files = files[: cfg.num_images]
    first = Image.open(files[0]).convert("RGB")
    images = [first] + [Image.open(p).convert("RGB") for p in files[1:]]
    # A common size so the set stacks; the feature extractors resize again anyway.
    images = [im if im.size == first.size else im.resize(first.size, Image.BICUBIC) for im in images]
    return np.stack([np.asarray(im, dtype=np.uint8) for im in images])


def _feature_extractor(cfg: FidConfig) -> FrechetInceptionDistance:
    if cfg.features == "miniclip":
        model, _ = load_miniclip(cfg.miniclip_dir)
        return FrechetInceptionDistance(
            feature=MiniClipFeatures(model), normalize=True, reset_real_features=False
        )
    weights = cfg.inception_weights
    if weights is None or not Path(weights).is_file():
        raise ValueError(
            f"fid.features=inception needs fid.inception_weights, a local copy of "
            f"pt_inception-2015-12-05-6726825d.pth (got {weights!r}); or use fid.features=miniclip"
        )
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        raise ValueError(
            "fid.features=inception needs the torch-fidelity package (pip install torch-fidelity)"
        ) from None
    return FrechetInceptionDistance(
        feature=2048, normalize=True, reset_real_features=False,
        feature_extractor_weights_path=weights,
    )


class FidScorer:
    """FID of image sets against one reference set (reference features computed once)."""

    def __init__(self, cfg: FidConfig, reference: np.ndarray, batch_size: int = 64) -> None:
        if len(reference) < 2:
            raise ValueError("FID needs at least 2 reference images")
        self.metric = _feature_extractor(cfg)
        self.num_features = int(self.metric.real_features_sum.numel())
        self.batch_size = batch_size
        self._add(reference, real=True)

    def _add(self, images: np.ndarray, real: bool) -> None:
        for start in range(0, len(images), self.batch_size):
            self.metric.update(to_float(images[start : start + self.batch_size]), real=real)

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> float:
        """FID of (N, H, W, 3) uint8 `images` (N >= 2) against the reference."""
        if len(images) < 2:
            raise ValueError(f"FID needs at least 2 generated images, got {len(images)}")
        self.metric.reset()  # keeps the reference features (reset_real_features=False)
        self._add(images, real=False)
        return float(self.metric.compute())


def hf_noise_ratio(images: np.ndarray, reference: np.ndarray, cutoff: float = 0.25) -> float:
    """Mean HF fraction of uint8 `images` over that of uint8 `reference` (module docstring)."""
    ref = to_float(reference)
    gen = to_float(images)
    if gen.shape[-2:] != ref.shape[-2:]:
        gen = F.interpolate(gen, size=ref.shape[-2:], mode="bilinear", antialias=True)
    ref_fraction = high_frequency_fraction(ref, cutoff).mean()
    if ref_fraction <= 0:
        raise ValueError("the reference images have no energy above the cut-off; lower it")
    return float(high_frequency_fraction(gen, cutoff).mean() / ref_fraction)
