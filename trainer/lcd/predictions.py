"""Conversions between a diffusion model's output and (x0, eps) (docs/method.md §1).

With alpha = sqrt(abar_t), sigma = sqrt(1 - abar_t) and z = alpha x0 + sigma eps:
  epsilon:      o = eps                      -> x0 = (z - sigma o)/alpha, eps = o
  v_prediction: o = alpha eps - sigma x0     -> x0 = alpha z - sigma o,   eps = alpha o + sigma z
  sample:       o = x0                       -> x0 = o,                   eps = (z - alpha o)/sigma
Read the type from the teacher's scheduler config (SD2.1-768 is v_prediction).
"""

from __future__ import annotations

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def check_prediction_type(prediction_type: str) -> None:
    """Raise ValueError for a prediction type the conversions do not know."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type={prediction_type!r} is unknown; use one of {PREDICTION_TYPES} "
            "(read it from the teacher scheduler's config.prediction_type)."
        )


def to_x0_eps(
    model_output: torch.Tensor,
    z: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    prediction_type: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) from a model output at noise level (alpha, sigma), both broadcastable to z."""
    check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return (z - sigma * model_output) / alpha, model_output
    if prediction_type == "v_prediction":
        return alpha * z - sigma * model_output, alpha * model_output + sigma * z
    return model_output, (z - alpha * model_output) / sigma


def from_x0_eps(
    x0: torch.Tensor,
    eps: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    prediction_type: str,
) -> torch.Tensor:
    """The model output that `to_x0_eps` maps back to (x0, eps); the inverse conversion."""
    check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "v_prediction":
        return alpha * eps - sigma * x0
    return x0
