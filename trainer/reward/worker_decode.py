"""The expert's images decoded on the train worker (`lrm.decode_on_worker`), as the paper does.

Algorithm 4 scores D(z) with the expert; the reference trainer decodes on each training GPU.
By default this project sends the latents and one `serve.vaes` deployment decodes every
worker's requests, so with 8 workers one VAE replica decodes 8 x 3 x lrm.batch_size latents
a step. With `lrm.decode_on_worker` each worker decodes its own triplets with the teacher's
VAE (frozen, no gradient) on the queue's event-loop thread, off the training thread, and
sends the images as uint8 (a quarter of float32's bytes; the packages' PIL paths quantise
the same way).
"""

from __future__ import annotations

import asyncio

import torch

from reward_service.latents import LatentDecoder


class WorkerDecodedExpert:
    """A `LatentExpert` that decodes latents here and asks `expert.score_images`."""

    def __init__(self, expert, decoder: LatentDecoder) -> None:
        self.expert = expert
        self.decoder = decoder

    @property
    def worst_case_s(self) -> float:
        """The wrapped expert's longest wait (decoding a few latents adds little to it)."""
        return self.expert.worst_case_s

    async def score_latents(
        self, model: str, latents: torch.Tensor, prompts: list[str], vae: str
    ):
        """(N, C, h, w) scaled latents -> the expert's ScoreResult for their images
        (`vae`, the service's VAE name, is unused: this worker's VAE decodes)."""
        images = await asyncio.to_thread(self.decoder.decode, latents.detach())  # (N, 3, H, W)
        pixels = (images * 255).round().to(torch.uint8)
        return await self.expert.score_images(model, pixels, prompts)
