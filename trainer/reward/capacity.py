"""Can the reward service answer a step's expert requests in a step? (a warning, not an error)

Every step each of the `scaling.num_workers` workers asks the expert for the 3 latents of
`lrm.batch_size` triplets (Algorithm 4). The service answers at most

    images a step = most replicas x calls at once per replica x images per call
                    x lrm.step_seconds / call_seconds

(the scorer class says the middle two: a batch of max_batch_size per scorer thread, or a
VLM judge's max_concurrency chat calls, two per image), and its VAE decodes at most
`most replicas x step_seconds / decode_seconds` latents a step unless `lrm.decode_on_worker`.
Asking for more makes a backlog that grows every step; once a request waits longer than the
staleness window it is dropped and its triplets' LRM updates are skipped. The figures
`call_seconds`, `decode_seconds` and `step_seconds` are a recipe's expectations (nothing
measures them before the run); without them there is no check.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from reward_service.scorers.registry import scorer_class

if TYPE_CHECKING:
    from trainer.config import RGLCDConfig

TRIPLET = 3  # z0, z1, z2: the latents of one LRM triplet


def expert_images_per_step(cfg: RGLCDConfig) -> int:
    return cfg.scaling.num_workers * cfg.lrm.batch_size * TRIPLET


def scorer_images_per_step(cfg: RGLCDConfig) -> float | None:
    """Images the expert's replicas score in `lrm.step_seconds` (None without the figures)."""
    spec = cfg.serve.scorer(cfg.lrm.expert)
    if spec.call_seconds is None:
        return None
    calls, images_per_call = scorer_class(spec).call_capacity(spec)
    return spec.most_replicas * calls * images_per_call * cfg.lrm.step_seconds / spec.call_seconds


def vae_images_per_step(cfg: RGLCDConfig) -> float | None:
    """Latents the expert's VAE replicas decode in `lrm.step_seconds` (None: no figures, or
    the workers decode)."""
    if cfg.lrm.decode_on_worker:
        return None
    vae = cfg.serve.vaes[cfg.expert_vae_name]
    if vae.decode_seconds is None:
        return None
    return vae.most_replicas * cfg.lrm.step_seconds / vae.decode_seconds


def capacity_warnings(cfg: RGLCDConfig) -> list[str]:
    """One line per part of the reward service that falls behind the recipe's requests."""
    if not cfg.uses_lrm or cfg.lrm.step_seconds is None:
        return []
    wanted = expert_images_per_step(cfg)
    window = max(cfg.lrm.max_staleness_steps, cfg.lrm.max_adaptive_staleness_steps)
    warnings = []
    parts = (
        (f"expert {cfg.lrm.expert!r}", scorer_images_per_step(cfg),
         "raise its num_replicas / autoscaling.max_replicas (or a judge's max_concurrency)"),
        ("VAE decoding the expert's latents", vae_images_per_step(cfg),
         "set lrm.decode_on_worker=true, or raise the VAE's replicas"),
    )
    for what, answered, remedy in parts:
        if answered is None or answered >= wanted:
            continue
        # The backlog grows by (wanted - answered) images a step; a request waits
        # backlog / answered steps, which passes the window after this many steps.
        overflow = math.ceil(window * answered / (wanted - answered))
        warnings.append(
            f"{what} answers about {answered:.0f} images a step (lrm.step_seconds="
            f"{cfg.lrm.step_seconds}) but {cfg.scaling.num_workers} workers ask for {wanted} "
            f"({cfg.lrm.batch_size} triplets x 3 each): after about {overflow} steps requests "
            f"outlive the {window}-step staleness window and their LRM updates are skipped "
            f"(share skipped >= {1 - answered / wanted:.0%}); {remedy}"
        )
    return warnings
