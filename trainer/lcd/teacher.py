"""The CFG-augmented teacher ODE step of LCD (paper eq. 9 and 13; docs/method.md §1)."""

from __future__ import annotations

import torch
from torch import nn

from trainer.lcd.guidance import apply_guidance
from trainer.lcd.predictions import to_x0_eps
from trainer.lcd.schedule import alpha_sigma, ddim_step


def _batched_embeds(embeds: torch.Tensor, batch_size: int, name: str) -> torch.Tensor:
    if embeds.shape[0] == batch_size:
        return embeds
    if embeds.shape[0] == 1:
        return embeds.expand(batch_size, *embeds.shape[1:])
    raise ValueError(
        f"{name} has batch size {embeds.shape[0]} but the latents have {batch_size}; "
        "pass one row per latent or a single row to broadcast."
    )


def _cat_added(
    cond: dict[str, torch.Tensor] | None,
    uncond: dict[str, torch.Tensor] | None,
    batch_size: int,
    dtype: torch.dtype,
) -> dict[str, torch.Tensor] | None:
    """SDXL's added_cond_kwargs of the batched [cond; uncond] call (None for SD)."""
    if cond is None and uncond is None:
        return None
    if cond is None or uncond is None or cond.keys() != uncond.keys():
        raise ValueError("cond_added and uncond_added must both be given, with the same keys.")
    return {
        key: torch.cat(
            [
                _batched_embeds(cond[key], batch_size, f"cond_added[{key!r}]"),
                _batched_embeds(uncond[key], batch_size, f"uncond_added[{key!r}]"),
            ]
        ).to(dtype)
        for key in cond
    }


@torch.no_grad()
def guided_teacher_step(
    teacher_unet: nn.Module,
    z_start: torch.Tensor,
    t_start: torch.Tensor,
    abar_end: torch.Tensor,
    cond_embeds: torch.Tensor,
    uncond_embeds: torch.Tensor,
    w: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    prediction_type: str,
    cond_added: dict[str, torch.Tensor] | None = None,
    uncond_added: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """z_e = DDIM(x0_w, eps_w) from z_s with the frozen teacher and guidance w (no grad).

    Shapes: z_start (B, C, H, W); t_start, abar_end, w (B,); cond_embeds (B, L, D);
    uncond_embeds (B or 1, L, D), the text encoding of the empty prompt (SD; not zeros).
    SDXL teachers also take `cond_added` / `uncond_added`, their ``added_cond_kwargs``
    (``text_embeds`` (B or 1, P), ``time_ids`` (B or 1, 6)).
    The teacher sees cond and uncond in one batched call; both outputs are converted to
    (x0, eps), guided as x_w = x_c + w (x_c - x_u), and moved by one DDIM step to abar_end.
    Because the DDIM step is linear in (x0, eps), this equals eq. 9:
    z + (1+w) Psi(z, c) - w Psi(z, empty).
    """
    batch = z_start.shape[0]
    cond_embeds = _batched_embeds(cond_embeds, batch, "cond_embeds")
    uncond_embeds = _batched_embeds(uncond_embeds, batch, "uncond_embeds")
    dtype = next(teacher_unet.parameters()).dtype
    out = teacher_unet(
        torch.cat([z_start, z_start]).to(dtype),
        torch.cat([t_start, t_start]),
        encoder_hidden_states=torch.cat([cond_embeds, uncond_embeds]).to(dtype),
        added_cond_kwargs=_cat_added(cond_added, uncond_added, batch, dtype),
    ).sample.to(z_start.dtype)
    out_cond, out_uncond = out.chunk(2)  # (B, C, H, W) each
    alpha, sigma = alpha_sigma(alphas_cumprod, t_start, z_start)
    x0_c, eps_c = to_x0_eps(out_cond, z_start, alpha, sigma, prediction_type)
    x0_u, eps_u = to_x0_eps(out_uncond, z_start, alpha, sigma, prediction_type)
    x0_w = apply_guidance(x0_c, x0_u, w)
    eps_w = apply_guidance(eps_c, eps_u, w)
    return ddim_step(x0_w, eps_w, abar_end)
