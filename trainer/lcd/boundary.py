"""Consistency-model boundary conditions of LCM (paper eq. 5; docs/method.md §1).

f(z, t) = c_skip(t) z + c_out(t) x0(F(z, t), z, t), with sigma_data = 0.5 and the timestep
scaled by 10 so that c_skip ~ 1 and c_out ~ 0 only very near t = 0 (as diffusers'
``LCMScheduler.get_scalings_for_boundary_condition_discrete``).
"""

from __future__ import annotations

import torch

from trainer.lcd.predictions import to_x0_eps
from trainer.lcd.schedule import alpha_sigma, append_dims

SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0


def boundary_scalings(
    t: torch.Tensor, sigma_data: float = SIGMA_DATA, timestep_scaling: float = TIMESTEP_SCALING
) -> tuple[torch.Tensor, torch.Tensor]:
    """c_skip(t), c_out(t) for integer timesteps t (B,), in float64.

    s = timestep_scaling * t;  c_skip = sd^2 / (s^2 + sd^2);  c_out = s / sqrt(s^2 + sd^2).
    """
    s = torch.as_tensor(t).to(torch.float64) * timestep_scaling
    c_skip = sigma_data**2 / (s**2 + sigma_data**2)
    c_out = s / (s**2 + sigma_data**2) ** 0.5
    return c_skip, c_out


def consistency_output(
    model_output: torch.Tensor,
    z: torch.Tensor,
    t: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    prediction_type: str,
    sigma_data: float = SIGMA_DATA,
    timestep_scaling: float = TIMESTEP_SCALING,
) -> torch.Tensor:
    """The consistency function f(z, t) = c_skip z + c_out x0 (eq. 5), shaped like z.

    `model_output` is the raw UNet output at (z, t); `t` is (B,) long.
    """
    alpha, sigma = alpha_sigma(alphas_cumprod, t, z)
    x0, _ = to_x0_eps(model_output, z, alpha, sigma, prediction_type)
    c_skip, c_out = boundary_scalings(t.to(alphas_cumprod.device), sigma_data, timestep_scaling)
    c_skip = append_dims(c_skip, z.dim()).to(z)
    c_out = append_dims(c_out, z.dim()).to(z)
    return c_skip * z + c_out * x0
