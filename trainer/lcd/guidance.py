"""Guidance scale: sampling, Fourier embedding and classifier-free guidance (docs/method.md §1).

LCM form throughout: x_w = x_c + w (x_c - x_u), i.e. the Imagen / diffusers pipeline scale is
w + 1 (``LatentConsistencyModelPipeline`` embeds ``guidance_scale - 1``).
"""

from __future__ import annotations

import torch

from trainer.lcd.schedule import append_dims


def sample_guidance_scale(
    batch_size: int,
    w_min: float,
    w_max: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """w ~ U[w_min, w_max] per sample, (B,) float32 (paper section 4: [5, 15])."""
    if w_max < w_min:
        raise ValueError(f"w_max={w_max} is below w_min={w_min}; pass w_min <= w_max.")
    return w_min + (w_max - w_min) * torch.rand(batch_size, generator=generator)


def guidance_scale_embedding(
    w: torch.Tensor, embedding_dim: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Sinusoidal embedding of 1000 w, (B,) -> (B, embedding_dim), [sin, cos] order.

    Frequencies exp(-i log(10000)/(half-1)); odd dims are zero-padded. Numerically the same
    as diffusers' ``LatentConsistencyModelPipeline.get_guidance_scale_embedding``.
    """
    if w.dim() != 1:
        raise ValueError(f"w must be 1-D (one scale per sample), got shape {tuple(w.shape)}.")
    half = embedding_dim // 2
    if half < 2:
        raise ValueError(f"embedding_dim={embedding_dim} is too small; use at least 4.")
    log_step = torch.log(torch.tensor(10000.0)) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=dtype) * -log_step).to(w.device)
    angles = (w * 1000.0).to(dtype)[:, None] * freqs[None, :]  # (B, half)
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if embedding_dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def apply_guidance(cond: torch.Tensor, uncond: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x_w = x_c + w (x_c - x_u), w (B,) or scalar (eq. 9 with a linear solver)."""
    w = append_dims(torch.as_tensor(w, device=cond.device), cond.dim()).to(cond)
    return cond + w * (cond - uncond)
