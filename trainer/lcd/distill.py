"""One LCD loss evaluation (paper eq. 8, Algorithm 3 without the reward term).

Pure given its inputs: the caller draws the solver indices, guidance scales and noise (so a
seeded run is reproducible) and owns the optimizer and the EMA update. `lcd_loss` runs the
stages in order; the training task (trainer/task.py) runs the same stage functions
(`noised_start`, `consistency`, `guided_teacher_step`, `distance_loss`), some of them on a
second thread, and a test checks that both give the same loss bit for bit.
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


def noised_start(
    latents: torch.Tensor,
    noise: torch.Tensor,
    index: torch.Tensor,
    grid: DDIMGrid,
    alphas_cumprod: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z_s, t_s, t_e, abar_prev[n]): z_s = alpha_{t_s} z0 + sigma_{t_s} eps (Algorithm 3).

    index: solver indices n (B,) on the latents' device; t_s = ddim_t[n], t_e = t_s - k.
    """
    t_start, t_end = solver_timesteps(grid, index)
    abar_end = grid.abar_prev[index.to(grid.abar_prev.device)]
    return add_noise(latents, noise, alphas_cumprod, t_start), t_start, t_end, abar_end


def consistency_function(
    unet: nn.Module,
    z: torch.Tensor,
    t: torch.Tensor,
    w_embedding: torch.Tensor | None,
    hidden_states: torch.Tensor,
    added_cond_kwargs: dict[str, torch.Tensor] | None,
    alphas_cumprod: torch.Tensor,
    prediction_type: str,
) -> torch.Tensor:
    """f(z, w, c, t) = c_skip z + c_out x0(unet(z, t, w, c)) (eq. 5): online and target net."""
    out = unet(
        z,
        t,
        timestep_cond=w_embedding,
        encoder_hidden_states=hidden_states,
        added_cond_kwargs=added_cond_kwargs,
    ).sample
    return consistency_output(out, z, t, alphas_cumprod, prediction_type)


def student_w_embedding(
    student: nn.Module, w: torch.Tensor, like: torch.Tensor
) -> torch.Tensor | None:
    """The (B, time_cond_proj_dim) guidance embedding the student takes, or None (LCM-LoRA)."""
    dim = student.config.time_cond_proj_dim
    return None if dim is None else guidance_scale_embedding(w, dim).to(like)
