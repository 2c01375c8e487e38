"""LRM scores of a study's pairs: the latent reward model judged on the pictures people saw.

The LRM scores latents, not pictures, and an evaluation records no latents: each shown image
is encoded by the pipeline's VAE (posterior mean, times the VAE's scaling factor; the trainer
samples the posterior, the mean keeps a score deterministic) at the image's own size, and
scored with its prompt as R^L(z, c) (paper eq. 12, without the 1/tau_L factor: only the
order of the two sides matters here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trainer.data import load_image
from trainer.models import load_vae


@torch.no_grad()
def add_lrm_scores(items: list[dict], lrm_dir: Path, vae_source: str, name: str = "lrm") -> None:
    """Add `name`: [score of A, score of B] to every comparison item's `scores` (in place).

    Items must still hold their `sources` (image paths), as `create.plan_items` returns them.
    """
    from trainer.lrm.model import LatentRewardModel  # deferred: loads transformers

    lrm = LatentRewardModel.from_pretrained(lrm_dir)
    vae = load_vae(vae_source).requires_grad_(False).eval()
    for item in (i for i in items if i["kind"] == "pair"):
        pictures = [Path(p).read_bytes() for p in item["sources"]]
        side = _image_side(item["sources"][0])
        pixels = torch.from_numpy(np.stack([load_image(raw, side) for raw in pictures]))
        latents = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor  # (2, C, h, w)
        rewards = lrm.reward(latents, prompts=[item["prompt"]] * 2)
        item["scores"][name] = [float(r) for r in rewards]


def _image_side(path: str) -> int:
    from PIL import Image

    with Image.open(path) as image:
        return min(image.size)
