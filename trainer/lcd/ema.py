"""EMA of the online consistency model into the target model (Algorithm 3, last line).

Direction (docs/method.md §1): target <- mu * target + (1 - mu) * online, mu = 0.95. The
paper's eq. 6 text writes it the other way round; Algorithms 3-4 and the reference code use
this one, so a target starts as a copy of the student and trails it slowly.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, mu: float) -> None:
    """In place: every target parameter <- mu * target + (1 - mu) * online; buffers copied."""
    if not 0.0 <= mu <= 1.0:
        raise ValueError(f"EMA rate mu={mu} must lie in [0, 1] (the reference value is 0.95).")
    online_params = dict(online.named_parameters())
    target_params = dict(target.named_parameters())
    if online_params.keys() != target_params.keys():
        missing = sorted(online_params.keys() ^ target_params.keys())[:5]
        raise ValueError(
            f"target and online models differ in parameters (e.g. {missing}); "
            "initialise the target as a copy of the student."
        )
    for name, param in target_params.items():
        src = online_params[name].detach().to(device=param.device, dtype=param.dtype)
        param.mul_(mu).add_(src, alpha=1.0 - mu)
    online_buffers = dict(online.named_buffers())
    for name, buf in target.named_buffers():
        buf.copy_(online_buffers[name])
