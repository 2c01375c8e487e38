"""Agreement of a latent proxy reward model (LRM) with the expert on fixed held-out triplets.

For held-out toy images: z0 = the image's VAE latent, z1 / z2 = an exported LCM's 1- and 2-step
samples for its caption (same noise for every LRM); the toy judge (the expert) scores the
decoded triplets and an LRM ranks the same three pairs. Used by the LRM-agreement study and the
LRM latency benchmark.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rglcd.toy.judge import ToyJudge
from trainer.data import EncodeImages


@torch.no_grad()
def held_out_triplets(run: Path, data_dir: Path, n: int, seed: int):
    """(latents (n, 3, C, h, w), captions, judge scores (n, 3)) of the fixed triplets."""
    from diffusers import DiffusionPipeline, LCMScheduler

    from rglcd.toy.data import ensure_toy_dataset, read_toy_table  # deferred: loads pyarrow

    pipe = DiffusionPipeline.from_pretrained(run / "pipeline", local_files_only=True,
                                             dtype=torch.float32)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    ensure_toy_dataset(data_dir, "heldout", 2000)
    table = read_toy_table(data_dir, "heldout").slice(0, n)
    captions = [str(c) for c in table.column("caption").to_pylist()]
    batch = {"image": np.array(table.column("image").to_pylist(), dtype=object),
             "caption": np.array(captions, dtype=object)}
    real = torch.from_numpy(EncodeImages(str(run / "pipeline"), 32, seed)(batch)["latents"])
    size = pipe.unet.config.sample_size
    noise = torch.randn((n, pipe.unet.config.in_channels, size, size),
                        generator=torch.Generator().manual_seed(seed))
    samples = [pipe(prompt=captions, num_inference_steps=steps, latents=noise.clone(),
                    generator=torch.Generator().manual_seed(seed + 1),
                    output_type="latent").images for steps in (1, 2)]
    latents = torch.stack([real, *samples], dim=1)  # (n, 3, C, h, w), scaled latents
    vae = pipe.vae
    flat = latents.flatten(0, 1) / vae.config.scaling_factor
    images = (vae.decode(flat).sample / 2 + 0.5).clamp(0, 1)
    scores = ToyJudge().scores(images, [c for c in captions for _ in range(3)]).view(n, 3)
    return latents, captions, scores


@torch.no_grad()
def agreement(lrm, latents: torch.Tensor, captions: list[str], scores: torch.Tensor) -> dict:
    """Counted like the training metric (trainer.reward.lrm_hook.pair_counts), every score
    present."""
    from trainer.reward.lrm_hook import pair_counts  # deferred: loads transformers

    n = len(captions)
    tokens = lrm.tokenize([c for c in captions for _ in range(3)])
    rewards = lrm.reward(latents.flatten(0, 1), **tokens).view(n, 3)
    _, agree, counted = pair_counts(rewards, scores, torch.ones_like(scores, dtype=torch.bool))
    return {"agreement": float(agree / max(counted, 1)), "pairs": int(counted)}
