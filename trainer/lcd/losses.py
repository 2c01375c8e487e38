"""Distance functions d(., .) of the LCD loss (paper eq. 8: Huber; docs/method.md §1)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def pseudo_huber_loss(pred: torch.Tensor, target: torch.Tensor, c: float) -> torch.Tensor:
    """mean(sqrt((pred - target)^2 + c^2) - c), computed in float32 (or float64 inputs)."""
    if c <= 0:
        raise ValueError(f"huber c={c} must be positive (the reference value is 1e-3).")
    diff = _upcast(pred) - _upcast(target)
    return torch.mean(torch.sqrt(diff**2 + c**2) - c)


def l2_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error, computed in float32 (or float64 inputs)."""
    return torch.mean((_upcast(pred) - _upcast(target)) ** 2)


def _upcast(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


LOSSES: dict[str, Callable[..., torch.Tensor]] = {"huber": pseudo_huber_loss, "l2": l2_loss}


def distance_loss(
    pred: torch.Tensor, target: torch.Tensor, loss_type: str, huber_c: float
) -> torch.Tensor:
    """The LCD distance selected by name: "huber" (pseudo-Huber, eq. 8) or "l2"."""
    if loss_type == "huber":
        return pseudo_huber_loss(pred, target, huber_c)
    if loss_type in LOSSES:
        return LOSSES[loss_type](pred, target)
    raise ValueError(f"loss_type={loss_type!r} is unknown; use one of {sorted(LOSSES)}.")
