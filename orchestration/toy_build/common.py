"""Shared helpers of the toy-world build stages: seeding, data loading, budgeted loops."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rglcd.toy.data import ensure_toy_dataset, read_toy_images


@dataclass(frozen=True)
class BuildSettings:
    """Sizes, seed and time budgets for one rebuild; defaults are the committed build's."""

    data_dir: Path
    seed: int = 0
    n_train: int = 40_000
    n_validation: int = 2_000
    n_heldout: int = 2_000
    clip_steps: int = 1_200
    clip_minutes: float = 10.0
    clip_resume: bool = False  # continue the saved mini CLIP's image tower, text tower frozen
    # Stage reward-clip (on request): fine-tunes the image tower; objective "adversarial"
    # (L2 PGD) or "hard-negatives" (degraded copies must score lower; docs/reward-clip).
    reward_clip_objective: str = "adversarial"
    reward_clip_counterfactuals: bool = False  # hard-negatives: add shape/size/colour swaps
    reward_clip_steps: int = 3_000
    reward_clip_minutes: float = 10.0
    reward_clip_eps: float = 0.25  # PGD radius; docs/reward-clip
    reward_clip_attack_steps: int = 5
    reward_clip_batch: int = 256
    vae_steps: int = 3_000
    vae_minutes: float = 10.0
    vae_resume: bool = False  # continue training the VAE saved by an earlier "vae" stage
    vae_decoder_only: bool = False  # with vae_resume: encoder frozen, latent space unchanged
    unet_steps: int = 3_500
    unet_minutes: float = 24.0
    unet_images: int = 12_000  # latents precomputed for this many training images
    unet_resume: bool = False  # continue the UNet of the pipeline folder (same latent space)
    verify_prompts: int = 200
    # Stages clip, reward-clip and unet train on this device; same recipe and batch, only
    # faster on a GPU.
    device: str = "cpu"


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def load_split(settings: BuildSettings, split: str) -> tuple[torch.Tensor, list[str]]:
    """(N, 3, 32, 32) float images in [0, 1] and captions of `split` (generated if missing)."""
    n = {"train": settings.n_train, "validation": settings.n_validation,
         "heldout": settings.n_heldout}[split]
    paths = ensure_toy_dataset(settings.data_dir, split, n, settings.seed)
    cache = settings.data_dir / f"{split}.decoded.npz"  # PNG decoding dominates otherwise
    if cache.exists() and cache.stat().st_mtime >= max(Path(p).stat().st_mtime for p in paths):
        with np.load(cache) as stored:
            images, captions = stored["images"], stored["captions"].tolist()
    else:
        images, captions = read_toy_images(settings.data_dir, split)
        np.savez(cache, images=images, captions=np.array(captions))
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0, captions


def budgeted_steps(steps: int, minutes: float, desc: str) -> Iterator[tuple[int, float, tqdm]]:
    """Yield (step, progress, bar) for `steps` steps or until `minutes` of wall time passed.

    progress in [0, 1) is the larger of the step and the time fraction, so learning-rate
    schedules still anneal when the time budget, not the step count, ends a stage.
    """
    start = time.monotonic()
    budget = 60.0 * minutes
    with tqdm(total=steps, desc=desc, mininterval=5.0) as bar:
        for step in range(steps):
            elapsed = time.monotonic() - start
            if elapsed > budget:
                bar.write(f"{desc}: time budget of {minutes} min reached at step {step}")
                return
            yield step, max(step / steps, elapsed / budget), bar
            bar.update(1)


def warmup_lr(step: int, warmup: int) -> float:
    """Linear warm-up factor, then constant (docs/method.md §8 recipe)."""
    return min(1.0, (step + 1) / warmup)


def tensor_size_mb(directory: Path) -> float:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) / 2**20
