"""One LCD loss evaluation (paper eq. 8, Algorithm 3 without the reward term).

Pure given its inputs: the caller draws the solver indices, guidance scales and noise (so a
seeded run is reproducible) and owns the optimizer and the EMA update.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from trainer.lcd.boundary import consistency_output
from trainer.lcd.guidance import guidance_scale_embedding
from trainer.lcd.losses import HUBER_C, distance_loss
from trainer.lcd.schedule import DDIMGrid, add_noise, solver_timesteps
from trainer.lcd.teacher import guided_teacher_step


class LCDOutput(NamedTuple):
    loss: torch.Tensor  # scalar, float32
    online: torch.Tensor  # f_theta(z_s, w, c, t_s), (B, C, H, W), with grad (RG-LCD's x0 guess)
    target: torch.Tensor  # f_theta-(z_e, w, c, t_e), (B, C, H, W), no grad
    t_start: torch.Tensor  # (B,) long
    t_end: torch.Tensor  # (B,) long


def lcd_loss(
    student: nn.Module,
    target_unet: nn.Module,
    teacher_unet: nn.Module,
    latents: torch.Tensor,
    noise: torch.Tensor,
    index: torch.Tensor,
    w: torch.Tensor,
    cond_embeds: torch.Tensor,
    uncond_embeds: torch.Tensor,
    grid: DDIMGrid,
    alphas_cumprod: torch.Tensor,
    prediction_type: str,
    loss_type: str = "huber",
    huber_c: float = HUBER_C,
    cond_added: dict[str, torch.Tensor] | None = None,
    uncond_added: dict[str, torch.Tensor] | None = None,
) -> LCDOutput:
    """L_LCD = d(f_theta(z_s, w, c, t_s), f_theta-(z_e, w, c, t_e)) (eq. 8).

    latents: clean (scaled) VAE latents z0 (B, C, H, W); noise: eps like latents;
    index: solver indices n (B,); w: LCM guidance scales (B,). Only `student` gets gradients:
    the teacher step and the target run under no_grad. A student without
    ``time_cond_proj_dim`` (LCM-LoRA, ``lora.py``) gets no w-embedding: w reaches only the
    teacher's CFG. `cond_added` / `uncond_added`: SDXL's ``added_cond_kwargs``.
    """
    index = index.to(latents.device)
    t_start, t_end = solver_timesteps(grid, index)
    abar_end = grid.abar_prev[index.to(grid.abar_prev.device)]
    z_start = add_noise(latents, noise, alphas_cumprod, t_start)
    w_embedding = student_w_embedding(student, w, latents)
    conditioning = {"encoder_hidden_states": cond_embeds, "added_cond_kwargs": cond_added}

    online_out = student(z_start, t_start, timestep_cond=w_embedding, **conditioning).sample
    online = consistency_output(online_out, z_start, t_start, alphas_cumprod, prediction_type)

    z_end = guided_teacher_step(
        teacher_unet,
        z_start,
        t_start,
        abar_end,
        cond_embeds,
        uncond_embeds,
        w,
        alphas_cumprod,
        prediction_type,
        cond_added,
        uncond_added,
    )
    with torch.no_grad():
        target_out = target_unet(z_end, t_end, timestep_cond=w_embedding, **conditioning).sample
        target = consistency_output(target_out, z_end, t_end, alphas_cumprod, prediction_type)

    loss = distance_loss(online, target, loss_type, huber_c)
    return LCDOutput(loss=loss, online=online, target=target, t_start=t_start, t_end=t_end)


def student_w_embedding(
    student: nn.Module, w: torch.Tensor, like: torch.Tensor
) -> torch.Tensor | None:
    """The (B, time_cond_proj_dim) guidance embedding the student takes, or None (LCM-LoRA)."""
    dim = student.config.time_cond_proj_dim
    return None if dim is None else guidance_scale_embedding(w, dim).to(like)
