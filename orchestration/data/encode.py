"""Pixels -> scaled VAE latents, as a Ray Data class UDF (plain class: callable without Ray).

`z = vae.encode(x).latent_dist.sample() * scaling_factor` (docs/method.md §1; Algorithm 3,
line 1), with x in [-1, 1]. Each row's posterior sample uses its own generator seeded from
(seed, sample_key) exactly as `trainer.data.EncodeImages` does, so a latent shard holds the very
latents the trainer would have encoded from the image shard, and re-running the job gives the
same bytes. `posterior="mean"` stores the posterior mean instead (no sampling noise; the mean is
what diffusers' LCD examples store when they pre-encode).

Latents are stored as safetensors bytes of one (1, C, h, w) tensor per row, the `latent` column
format that `trainer.data.decode_latent_rows` reads (rglcd.codecs.decode_latents); float16 by
default (half the disk of float32; SD latents are O(1), so fp16's 3 significant digits suffice).
"""

from __future__ import annotations

import numpy as np
import torch

from rglcd import storage
from rglcd.codecs import encode_latents
from trainer.data import mix_seed

POSTERIORS = ("sample", "mean")
STORE_DTYPES = {"float16": torch.float16, "float32": torch.float32}
COMPUTE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_vae(teacher: str, subfolder: str | None = "vae", revision: str | None = None):
    """The teacher's AutoencoderKL from a local folder, a pkg:// location, an s3:// / gs://
    folder (copied once per node into its cache) or a hub id in the local cache (offline)."""
    from diffusers import AutoencoderKL

    try:
        folder = storage.local_copy(teacher) if storage.scheme(teacher) else teacher
        return AutoencoderKL.from_pretrained(
            folder, subfolder=subfolder or None, revision=revision, local_files_only=True
        )
    except (OSError, ValueError) as err:
        where = f"{teacher}/{subfolder}" if subfolder else teacher
        raise ValueError(
            f"cannot load an AutoencoderKL from {where!r} ({err}); pass as teacher a diffusers "
            "pipeline folder (with vae/) or a hub id already in the local Hugging Face cache, "
            "or vae_subfolder='' for a folder that is itself a VAE"
        ) from None


def vae_downsampling(vae) -> int:
    """Pixels per latent cell along one side: 2^(levels - 1) (8 for SD1.x/2.x/XL)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


class LatentEncoder:
    """Ray Data class UDF: {pixels (B, R, R, 3) uint8, sample_key, ...} -> adds latent bytes.

    Rows whose `skip_reason` is set pass through with an empty `latent`; the writer drops them.
    """

    def __init__(
        self,
        teacher: str,
        subfolder: str | None = "vae",
        seed: int = 0,
        device: str = "cpu",
        posterior: str = "sample",
        compute_dtype: str = "float32",
        store_dtype: str = "float16",
    ) -> None:
        if posterior not in POSTERIORS:
            raise ValueError(f"posterior={posterior!r} is unknown; use one of {POSTERIORS}")
        self.vae = load_vae(teacher, subfolder).requires_grad_(False).eval()
        self.device = torch.device(device)
        self.vae.to(self.device, COMPUTE_DTYPES[compute_dtype])
        self.compute_dtype = COMPUTE_DTYPES[compute_dtype]
        self.store_dtype = STORE_DTYPES[store_dtype]
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.seed = seed
        self.posterior = posterior

    @torch.no_grad()
    def encode(self, pixels: np.ndarray, keys: np.ndarray) -> torch.Tensor:
        """(B, R, R, 3) uint8 + (B,) keys -> (B, C, h, w) scaled latents, float32 on CPU."""
        x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float()
        x = x / 127.5 - 1.0  # same arithmetic as trainer.data.load_image: [-1, 1]
        dist = self.vae.encode(x.to(self.device, self.compute_dtype)).latent_dist
        latents = dist.mean.float()
        if self.posterior == "sample":
            noise = torch.stack([_row_noise(latents.shape[1:], self.seed, int(k)) for k in keys])
            latents = latents + dist.std.float() * noise.to(self.device)
        return (latents * self.scaling_factor).cpu()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.array([not reason for reason in batch["skip_reason"]], dtype=bool)
        latent_bytes = np.array([b""] * len(ok), dtype=object)
        shapes = np.zeros((len(ok), 3), dtype=np.int32)
        if ok.any():
            latents = self.encode(batch["pixels"][ok], batch["sample_key"][ok])
            rows = np.flatnonzero(ok)
            for row, latent in zip(rows, latents, strict=True):
                latent_bytes[row] = encode_latents(latent[None].to(self.store_dtype))
                shapes[row] = latent.shape
        out = {k: v for k, v in batch.items() if k != "pixels"}  # pixels stay in this stage
        out.update(latent=latent_bytes, latent_shape=shapes)
        return out


def _row_noise(shape: torch.Size, seed: int, key: int) -> torch.Tensor:
    """The per-row posterior noise of `trainer.data.EncodeImages` (same seed -> same noise)."""
    generator = torch.Generator().manual_seed(mix_seed(seed, key))
    return torch.randn(shape, generator=generator)
