"""Decoding latent score requests with a configured VAE (plain class; no Ray here).

A latent request carries `z = vae.encode(x).latent_dist.sample() * scaling_factor`
(docs/method.md §1). The service turns it into the images the scorers expect with the same
recipe as the RG-LCD direct path (docs/method.md §2):
`img = (vae.decode(z / scaling_factor).sample / 2 + 0.5).clamp(0, 1)`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from reward_service.config import VaeConfig
from rglcd import storage
from rglcd.codecs import check_latents

if TYPE_CHECKING:  # diffusers costs ~10 s of CPU to import: only the VAE replica pays it
    from diffusers import AutoencoderKL


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class LatentDecoder:
    """Wraps one frozen `AutoencoderKL`; decodes (N, C, h, w) latents to (N, 3, H, W) in [0, 1]."""

    def __init__(
        self,
        vae: AutoencoderKL,
        scaling_factor: float | None = None,
        chunk_size: int = 16,
        max_size_factor: float = 2.0,
    ) -> None:
        self.device = next(vae.parameters()).device
        self.vae = vae.eval().requires_grad_(False)
        self.scaling_factor = float(scaling_factor or vae.config.scaling_factor)
        self.latent_channels = int(vae.config.latent_channels)
        # Spatial upsampling of the decoder: 2 ** (number of blocks - 1), e.g. 8 for SD.
        self.upsampling = 2 ** (len(vae.config.block_out_channels) - 1)
        self.chunk_size = chunk_size
        # Decode cost grows with the square of the latent area: refuse sides past a multiple
        # of the size the VAE was trained at (its config's sample_size, in pixels).
        trained_side = int(vae.config.sample_size) // self.upsampling
        self.max_latent_side = max(1, int(max_size_factor * trained_side))

    @classmethod
    def from_config(cls, spec: VaeConfig) -> LatentDecoder:
        """Load the VAE offline from a pipeline folder (+ subfolder) or an AutoencoderKL folder."""
        from diffusers import AutoencoderKL

        kwargs = {"subfolder": spec.subfolder} if spec.subfolder else {}
        try:
            # A path, pkg:// location, or s3:// / gs:// folder copied once per node.
            path = storage.local_copy(spec.path) if storage.scheme(spec.path) else spec.path
            vae = AutoencoderKL.from_pretrained(path, **kwargs)
        except (OSError, ValueError) as err:  # FileNotFoundError of a missing URI included
            where = f"{spec.path}/{spec.subfolder}" if spec.subfolder else spec.path
            raise ValueError(f"could not load the VAE from {where!r}: {err}") from err
        vae = vae.to(_resolve_device(spec.device))
        return cls(vae, spec.scaling_factor, spec.decode_chunk_size, spec.max_size_factor)

    def info(self) -> dict:
        return {
            "latent_channels": self.latent_channels,
            "upsampling": self.upsampling,
            "scaling_factor": self.scaling_factor,
            "max_latent_side": self.max_latent_side,
        }

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, deadline: float | None = None) -> torch.Tensor:
        """(N, C, h, w) scaled latents -> (N, 3, h*f, w*f) float32 images in [0, 1] on CPU.

        `deadline` (a `time.time()` value) stops the work between chunks once the caller has
        given up, so an abandoned request does not hold the replica. Latents with sides
        above `max_latent_side` raise ValueError before any decoding.
        """
        latents = check_latents(latents, channels=self.latent_channels)
        if max(latents.shape[2:]) > self.max_latent_side:
            raise ValueError(
                f"latents of {latents.shape[2]}x{latents.shape[3]} are larger than this VAE "
                f"decodes (sides up to {self.max_latent_side})"
            )
        images = []
        for chunk in latents.split(self.chunk_size):
            if deadline is not None and time.time() > deadline:
                raise TimeoutError("latent decoding passed its deadline; the request was dropped")
            chunk = chunk.to(self.device, dtype=self.vae.dtype) / self.scaling_factor
            decoded = self.vae.decode(chunk).sample  # (n, 3, H, W) in about [-1, 1]
            images.append((decoded.float() / 2 + 0.5).clamp(0, 1).cpu())
        return torch.cat(images)
