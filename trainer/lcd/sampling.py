"""Multistep latent consistency sampling (paper Algorithm 2; docs/method.md §4).

Numerically the same as running diffusers' ``LCMScheduler`` (``set_timesteps`` + ``step``)
with the same model outputs and the same generator: the timestep schedule, the boundary
scalings, and the re-noising with the *next* timestep's abar all match.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from trainer.lcd.boundary import consistency_output
from trainer.lcd.guidance import guidance_scale_embedding
from trainer.lcd.schedule import add_noise

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def lcm_timesteps(
    num_steps: int, num_train_timesteps: int = 1000, original_inference_steps: int = 50
) -> list[int]:
    """The LCM timestep schedule, as ``LCMScheduler.set_timesteps(num_steps)``.

    The distillation grid (k-1, 2k-1, ..., T-1) with k = T // original_inference_steps is
    reversed and `num_steps` points are taken at evenly spaced indices floor(i * L / n):
    1 step -> [999]; 2 -> [999, 499]; 4 -> [999, 759, 499, 259].
    """
    if not 1 <= original_inference_steps <= num_train_timesteps:
        raise ValueError(
            f"original_inference_steps={original_inference_steps} must lie in "
            f"[1, {num_train_timesteps}]."
        )
    if not 1 <= num_steps <= original_inference_steps:
        raise ValueError(
            f"num_steps={num_steps} must lie in [1, {original_inference_steps}] "
            "(the LCM schedule is a subset of the distillation grid)."
        )
    skip = num_train_timesteps // original_inference_steps
    grid = [(i + 1) * skip - 1 for i in reversed(range(original_inference_steps))]
    length = len(grid)
    return [grid[(i * length) // num_steps] for i in range(num_steps)]


def lcm_sample(
    model_fn: ModelFn,
    latents: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    num_steps: int = 4,
    prediction_type: str = "epsilon",
    generator: torch.Generator | None = None,
    timesteps: Sequence[int] | None = None,
) -> torch.Tensor:
    """Run Algorithm 2 from initial noise `latents` (B, C, H, W); returns the final z0 estimate.

    `model_fn(z, t)` returns the raw model output for z (B, C, H, W) at t (B,) long. Each step:
    denoised = c_skip z + c_out x0; if not last, z = sqrt(abar_next) denoised +
    sqrt(1 - abar_next) noise, with noise drawn from `generator` like ``randn_tensor``.
    """
    if timesteps is None:
        timesteps = lcm_timesteps(num_steps, num_train_timesteps=len(alphas_cumprod))
    timesteps = list(timesteps)
    if not timesteps:
        raise ValueError("timesteps is empty; pass at least one timestep.")
    z = latents
    batch = latents.shape[0]
    denoised = latents
    for i, t in enumerate(timesteps):
        t_batch = torch.full((batch,), int(t), dtype=torch.long, device=latents.device)
        denoised = consistency_output(
            model_fn(z, t_batch), z, t_batch, alphas_cumprod, prediction_type
        )
        if i + 1 < len(timesteps):
            noise_device = generator.device if generator is not None else latents.device
            noise = torch.randn(
                z.shape, generator=generator, device=noise_device, dtype=denoised.dtype
            ).to(latents.device)
            t_next = torch.full_like(t_batch, int(timesteps[i + 1]))
            z = add_noise(denoised, noise, alphas_cumprod, t_next)
    return denoised


@torch.no_grad()
def lcm_sample_unet(
    unet: nn.Module,
    latents: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    w: torch.Tensor | None,
    alphas_cumprod: torch.Tensor,
    num_steps: int = 4,
    prediction_type: str = "epsilon",
    generator: torch.Generator | None = None,
    added_cond_kwargs: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Sample latents with an LCM UNet taking the w-embedding as ``timestep_cond``.

    `w` (B,) is in LCM form (a diffusers pipeline's ``guidance_scale`` is w + 1); no real CFG
    is run, one UNet call per step. `encoder_hidden_states` is (B, L, D). An LCM-LoRA UNet
    takes no w-embedding: pass w=None (a pipeline's guidance_scale 1, no CFG).
    `added_cond_kwargs`: SDXL's pooled text + time ids.
    """
    cond_dim = unet.config.time_cond_proj_dim
    if (cond_dim is None) != (w is None):
        raise ValueError(
            f"w={'None' if w is None else 'given'} but the UNet's time_cond_proj_dim is "
            f"{cond_dim}: pass w exactly when the UNet takes a guidance embedding "
            "(build_student_unet), w=None for an LCM-LoRA UNet."
        )
    w_embedding = None if w is None else guidance_scale_embedding(w, cond_dim).to(latents)

    def model_fn(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return unet(
            z,
            t,
            timestep_cond=w_embedding,
            encoder_hidden_states=encoder_hidden_states,
            added_cond_kwargs=added_cond_kwargs,
        ).sample

    return lcm_sample(
        model_fn, latents, alphas_cumprod, num_steps, prediction_type, generator=generator
    )
