"""Noise schedule lookups and the DDIM solver grid of LCD (docs/method.md §1).

All functions are pure: they take the teacher's ``alphas_cumprod`` (abar, shape (T,)) and
integer timesteps and return tensors. Shapes: B = batch, latents (B, C, H, W).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class DDIMGrid(NamedTuple):
    """The N-point DDIM solver grid on which LCD samples its (t_s, t_e) pairs.

    timesteps[i] = (i+1)*k - 1 with k = T // N (19, 39, ..., 999 for T=1000, N=50);
    abar_prev[i] = abar[timesteps[i-1]] and abar_prev[0] = abar[0] (not 1.0), so that
    abar_prev[i] == abar[t_e] with t_e = max(t_s - k, 0).
    """

    timesteps: torch.Tensor  # (N,) long
    abar: torch.Tensor  # (N,) abar at timesteps
    abar_prev: torch.Tensor  # (N,) abar at the end point of each solver step
    skip: int  # k


def scaled_linear_alphas_cumprod(
    num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
) -> torch.Tensor:
    """SD's scaled-linear abar (T,), float32, computed exactly as diffusers' schedulers do."""
    betas = (
        torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32)
        ** 2
    )
    return torch.cumprod(1.0 - betas, dim=0)


def ddim_grid(alphas_cumprod: torch.Tensor, num_ddim_timesteps: int = 50) -> DDIMGrid:
    """Build the DDIM solver grid (docs/method.md §1; paper appendix A, skip k = 20)."""
    num_train = alphas_cumprod.shape[0]
    if not 1 <= num_ddim_timesteps <= num_train:
        raise ValueError(
            f"num_ddim_timesteps={num_ddim_timesteps} must lie in [1, {num_train}] "
            "(the number of teacher training timesteps)."
        )
    skip = num_train // num_ddim_timesteps
    timesteps = torch.arange(1, num_ddim_timesteps + 1, device=alphas_cumprod.device) * skip - 1
    abar = alphas_cumprod[timesteps]
    abar_prev = torch.cat([alphas_cumprod[:1], abar[:-1]])
    return DDIMGrid(timesteps=timesteps, abar=abar, abar_prev=abar_prev, skip=skip)


def sample_solver_indices(
    batch_size: int, grid: DDIMGrid, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw n ~ U{0..N-1} per sample, (B,) long (Algorithm 3, line 4)."""
    n = len(grid.timesteps)
    return torch.randint(0, n, (batch_size,), generator=generator).to(grid.timesteps.device)


def solver_timesteps(grid: DDIMGrid, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(t_s, t_e) for solver indices (B,): t_s = ddim_t[n], t_e = max(t_s - k, 0).

    Returned on `index`'s device, whatever device the grid lives on.
    """
    t_start = grid.timesteps[index.to(grid.timesteps.device)].to(index.device)
    t_end = (t_start - grid.skip).clamp(min=0)
    return t_start, t_end


def append_dims(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshape (B,) (or a scalar) to (B, 1, ..., 1) with `ndim` dims for broadcasting."""
    return values.reshape(values.shape + (1,) * (ndim - values.dim()))


def alpha_sigma(
    alphas_cumprod: torch.Tensor, t: torch.Tensor, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), shaped (B, 1, 1, 1) like `like`.

    `t` is (B,) or a scalar long tensor. Computed in abar's precision, then cast.
    """
    t = torch.as_tensor(t, device=alphas_cumprod.device)
    abar = alphas_cumprod[t.long()]
    alpha = append_dims(abar.sqrt(), like.dim()).to(like)
    sigma = append_dims((1.0 - abar).sqrt(), like.dim()).to(like)
    return alpha, sigma


def add_noise(
    z0: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Forward process z_t = alpha_t z0 + sigma_t eps (Algorithm 3, line 5)."""
    alpha, sigma = alpha_sigma(alphas_cumprod, t, z0)
    return alpha * z0 + sigma * noise


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, abar_prev: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM step to the end point: z_e = sqrt(abar_e) x0 + sqrt(1-abar_e) eps.

    `abar_prev` is (B,) (e.g. ``grid.abar_prev[index]``); this is the paper's eq. 13 with the
    teacher's (x0, eps) written out (DDIM, eta = 0).
    """
    abar_prev = append_dims(abar_prev, x0.dim()).to(x0.device)
    return (abar_prev.sqrt() * x0 + (1.0 - abar_prev).sqrt() * eps).to(x0.dtype)
