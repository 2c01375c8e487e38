"""Image-set metrics, accumulated chunk by chunk: FID against reference images, HF-noise ratio,
flat-region noise.

FID (Heusel et al.) compares Gaussians fitted to image features. Nothing holds the images:
each chunk's features are folded into running sums (`FeatureMoments`: count, sum, sum of
outer products, in float64, as torchmetrics' ``FrechetInceptionDistance`` keeps them), and
the distance is torchmetrics' ``_compute_fid`` of the means and covariances (no hand-written
matrix square root). The feature network:

- ``random-conv`` (toy world, the default): 32 features of a conv net with frozen random
  weights from a fixed seed (``rglcd.toy.quality.RandomConvFeatures``); no recipe optimises
  it and no reward uses it (the toy-clip recipes optimise the mini CLIP, which flatters them).
- ``miniclip`` (toy world): the miniature CLIP's 64-d image embeddings
  (``rglcd.toy.miniclip.MiniClipFeatures``). Numbers are only comparable within this space.
- ``inception`` (real data): the standard 2048-d pool3 features of the FID Inception network
  (``torch-fidelity``'s, through torchmetrics), loaded from the weights file
  ``pt_inception-2015-12-05-6726825d.pth`` on local disk (``fid.inception_weights``); nothing
  is downloaded. With few images (say < 2048) Inception FID is biased upwards: compare models
  only at equal image counts.

HF-noise ratio (the over-optimisation symptom of docs/method.md §3): the share of an image's
spectral energy above a radial frequency cut-off (``rglcd.toy.metrics.high_frequency_fraction``),
averaged over the generated set and divided by the same average over the reference set. About
1 for images as clean as real ones; above 1 with added noise. Generated images are resized to
the reference resolution first so the frequencies match. Sharper edges carry more
high-frequency energy too, so this ratio rises with them as well as with noise.

Flat-region noise (the same symptom, without the edges): per image, the RMS deviation of each
pixel from the 3x3 median of its neighbourhood over the pixels away from any edge, in 0-255
levels (``rglcd.toy.quality.flat_region_noise``), at the image's own resolution. A clean flat
fill reads 0, added noise raises it, sharper or softer edges do not (edges and their
neighbourhood are left out). An image without a flat pixel reads NaN and is left out of means.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchmetrics.image.fid import FrechetInceptionDistance, _compute_fid

from orchestration.evaluation.config import FidConfig, ReferenceConfig
from orchestration.evaluation.generation import to_float
from rglcd import storage
from rglcd.toy.metrics import high_frequency_fraction
from rglcd.toy.miniclip import MiniClipFeatures, load_miniclip
from rglcd.toy.quality import RandomConvFeatures, flat_region_noise
from rglcd.toy.scenes import render, sample_scenes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
FLAT_NOISE_BATCH = 4  # images per median filter: bounds its memory at 1024 px


@dataclass
class FeatureMoments:
    """Running count, sum (D,) and sum of outer products (D, D) of features, float64."""

    count: int = 0
    total: torch.Tensor | None = None
    outer: torch.Tensor | None = None

    def add(self, features: torch.Tensor) -> None:
        """Fold in (N, D) features."""
        x = features.double().reshape(len(features), -1)
        if self.total is None:
            self.total, self.outer = torch.zeros(x.shape[1], dtype=torch.float64), \
                torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
        self.count += len(x)
        self.total += x.sum(dim=0)
        self.outer += x.T @ x

    def mean_cov(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (D,) and unbiased covariance (D, D), as torchmetrics computes them."""
        if self.count < 2:
            raise ValueError(f"FID needs at least 2 images per set, got {self.count}")
        mean = self.total / self.count
        cov = (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)
        return mean, cov


def frechet_distance(generated: FeatureMoments, reference: FeatureMoments) -> float:
    mu_ref, sigma_ref = reference.mean_cov()
    mu_gen, sigma_gen = generated.mean_cov()
    return float(_compute_fid(mu_ref, sigma_ref, mu_gen, sigma_gen))


def feature_network(cfg: FidConfig):
    """uint8 (N, H, W, 3) images -> (N, D) float features, for `cfg.features`."""
    if cfg.features == "random-conv":
        random_conv = RandomConvFeatures()
        return lambda images: random_conv(to_float(images))
    if cfg.features == "miniclip":
        network = MiniClipFeatures(load_miniclip(storage.local_copy(cfg.miniclip_dir))[0])
        return lambda images: network(to_float(images))
    weights = cfg.inception_weights
    if weights is None or not storage.is_file(weights):
        raise ValueError(
            f"fid.features=inception needs fid.inception_weights, a local copy of "
            f"pt_inception-2015-12-05-6726825d.pth (got {weights!r}); or use fid.features=miniclip"
        )
    if not storage.is_local(weights):
        weights = _local_file(weights)
    network = FrechetInceptionDistance(
        feature=2048, feature_extractor_weights_path=weights
    ).inception  # torch-fidelity's Inception: uint8 (N, 3, H, W), resized to 299 inside
    return lambda images: network(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2))


def _local_file(location: str) -> str:
    """A node-local cached copy of a remote weights file (its folder is cached once)."""
    folder = location.rsplit("/", 1)[0]
    return storage.join(storage.local_copy(folder), storage.basename(location))


def num_features(cfg: FidConfig) -> int:
    if cfg.features == "inception":
        return 2048
    if cfg.features == "random-conv":
        return RandomConvFeatures().num_features
    from transformers import CLIPConfig

    return CLIPConfig.from_pretrained(storage.local_copy(cfg.miniclip_dir)).projection_dim


def reference_files(cfg: ReferenceConfig) -> list[str]:
    """The reference folder's image files (at most `num_images`), sorted by name."""
    files = [f for f in storage.list_files(cfg.source, recursive=True)
             if f.lower().endswith(IMAGE_SUFFIXES)][: cfg.num_images]
    if len(files) < 2:
        raise ValueError(
            f"reference.source={cfg.source!r} holds {len(files)} image(s); FID needs at least 2 "
            f"({', '.join(IMAGE_SUFFIXES)} files) or use 'toy:<split>'"
        )
    return files


def reference_chunks(cfg: ReferenceConfig, chunk: int) -> list[tuple[int, int]]:
    """[start, stop) index ranges of the reference set, `chunk` images each."""
    if cfg.source is None:
        raise ValueError("reference.source is null; set it to 'toy:<split>' or an image folder")
    total = cfg.num_images if cfg.source.startswith("toy:") else len(reference_files(cfg))
    return [(i, min(i + chunk, total)) for i in range(0, total, chunk)]


def read_reference(cfg: ReferenceConfig, start: int, stop: int,
                   size: tuple[int, int] | None = None) -> np.ndarray:
    """Reference images [start, stop) as (n, H, W, 3) uint8: rendered toy scenes or files,
    resized to `size` (W, H) when given (a folder's images may differ in size)."""
    if cfg.source.startswith("toy:"):
        scenes = sample_scenes(cfg.source.removeprefix("toy:"), stop, seed=cfg.seed)[start:stop]
        images = [Image.fromarray(render(scene)) for scene in scenes]
    else:
        images = []
        for file in reference_files(cfg)[start:stop]:
            with storage.open_input(file) as stream:
                images.append(Image.open(stream).convert("RGB"))
    size = size or images[0].size
    return np.stack([np.asarray(im if im.size == size else im.resize(size, Image.BICUBIC))
                     for im in images])


def reference_size(cfg: ReferenceConfig) -> tuple[int, int]:
    """(W, H) of the first reference image: the resolution both sets are compared at."""
    return Image.fromarray(read_reference(cfg, 0, 1)[0]).size


def hf_fractions(images: np.ndarray, size: tuple[int, int], cutoff: float) -> torch.Tensor:
    """(N,) high-frequency share of uint8 `images`, resized to `size` (W, H) first."""
    x = to_float(images)
    if tuple(x.shape[-2:]) != (size[1], size[0]):
        x = F.interpolate(x, size=(size[1], size[0]), mode="bilinear", antialias=True)
    return high_frequency_fraction(x, cutoff)


def hf_noise_ratio(images: np.ndarray, reference: np.ndarray, cutoff: float = 0.25) -> float:
    """Mean HF fraction of uint8 `images` over that of uint8 `reference` (module docstring)."""
    size = (reference.shape[2], reference.shape[1])
    ref_fraction = hf_fractions(reference, size, cutoff).mean()
    if ref_fraction <= 0:
        raise ValueError("the reference images have no energy above the cut-off; lower it")
    return float(hf_fractions(images, size, cutoff).mean() / ref_fraction)


def flat_noise(images: np.ndarray, batch: int = FLAT_NOISE_BATCH) -> torch.Tensor:
    """(N,) flat-region noise (0-255, NaN = no flat pixel) of uint8 (N, H, W, 3) `images`,
    `batch` images at a time (the 3x3 median unfolds nine copies of each image)."""
    return torch.cat([flat_region_noise(to_float(part)) for part in chunked(images, batch)])


def chunked(images: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(images), size):
        yield images[start : start + size]
