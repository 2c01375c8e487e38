"""The stage functions of one LCD loss evaluation (paper eq. 8, Algorithm 3 without the
reward term).

Pure given their inputs: the caller draws the solver indices, guidance scales and noise (so a
seeded run is reproducible) and owns the optimizer and the EMA update. The training task
(trainer/task.py) runs them in order (`noised_start`, `consistency_function`,
`guided_teacher_step`, then `distance_loss`), some of them on a second thread.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.lcd.boundary import consistency_output
from trainer.lcd.guidance import guidance_scale_embedding
from trainer.lcd.schedule import DDIMGrid, add_noise, solver_timesteps


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
