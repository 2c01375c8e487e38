"""The LCD loss written as one straight function: the reference the task's stages are checked
against (paper eq. 8, Algorithm 3 without the reward term)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from trainer.config import LCDConfig
from trainer.lcd import (
    DDIMGrid,
    consistency_function,
    distance_loss,
    guided_teacher_step,
    noised_start,
    student_w_embedding,
)

HUBER_C = LCDConfig().huber_c


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
    z_start, t_start, t_end, abar_end = noised_start(latents, noise, index, grid, alphas_cumprod)
    w_embedding = student_w_embedding(student, w, latents)

    online = consistency_function(  # with grad
        student, z_start, t_start, w_embedding, cond_embeds, cond_added, alphas_cumprod,
        prediction_type,
    )
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
        target = consistency_function(
            target_unet, z_end, t_end, w_embedding, cond_embeds, cond_added, alphas_cumprod,
            prediction_type,
        )

    loss = distance_loss(online, target, loss_type, huber_c)
    return LCDOutput(loss=loss, online=online, target=target, t_start=t_start, t_end=t_end)
