"""The reward term of the student loss (eq. 10-11) and the hooks that compute it.

Reward hooks: `RewardHook.student_reward(context)` returns per-sample rewards that keep
gradients w.r.t. `context.online`; `after_step(context)` lets a hook train itself (the latent
proxy RM of Algorithm 4) on detached tensors. `DirectReward` decodes the online latents with
gradient and scores them with an in-process scorer (docs/method.md §2).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class RewardContext:
    """What a reward hook may look at during one step (Algorithm 4 needs all of it)."""

    latents: torch.Tensor  # z0, clean scaled latents (B, C, h, w)
    online: torch.Tensor  # f_theta(z_s, ...), with grad (the single-step generation)
    target: torch.Tensor  # f_theta-(z_e, ...), no grad
    captions: list[str]
    step: int


class RewardHook(ABC):
    """The reward term of the student loss; subclasses implement `student_reward`."""

    name = "reward"
    beta: float = 0.0
    # (low, high) inclusive on t_{n+k}: only single-step generations from these timesteps
    # carry the reward term (config reward.timestep_window); None = all of them (the paper)
    timestep_window: tuple[int, int] | None = None

    def weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """(B,) weight of each sample's reward in eq. 11: 1 inside the window, else 0."""
        if self.timestep_window is None:
            return torch.ones(timesteps.shape, dtype=torch.float32, device=timesteps.device)
        low, high = self.timestep_window
        return ((timesteps >= low) & (timesteps <= high)).float()

    @abstractmethod
    def student_reward(self, context: RewardContext) -> tuple[torch.Tensor, dict[str, float]]:
        """(B,) rewards that keep gradients w.r.t. `context.online`, and extra metrics."""

    def after_step(self, context: RewardContext) -> dict[str, float]:
        """Hook-side training after the student's step (e.g. LRM finetuning); default none."""
        return {}

    def trainable_state(self) -> tuple[dict[str, nn.Module], dict[str, object]]:
        """(modules, optimizers) a checkpoint must hold for this hook; default none."""
        return {}, {}


class DirectReward(RewardHook):
    """Direct RG-LCD (eq. 10-11): decode the online latents WITH gradient, score in-process.

    `img = (vae.decode(online / sf).sample / 2 + 0.5).clamp(0, 1)`; the scorer is frozen and
    differentiable. `decode_chunk_size` decodes in chunks to bound peak memory (0: one go).
    """

    name = "direct"

    def __init__(self, scorer, vae: nn.Module, beta: float, decode_chunk_size: int = 0) -> None:
        if not getattr(scorer, "differentiable", False):
            raise ValueError(
                f"scorer {scorer.name!r} is not differentiable, so the direct reward cannot "
                "backpropagate through it; pick a differentiable reward model or use the "
                "latent proxy reward mode."
            )
        self.scorer = scorer
        self.vae = vae
        self.beta = beta
        self.decode_chunk_size = decode_chunk_size

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, C, h, w) -> images (B, 3, H, W) in [0, 1], keeping gradients."""
        scaled = latents / self.vae.config.scaling_factor
        chunk = self.decode_chunk_size or scaled.shape[0]
        images = [self.vae.decode(part).sample for part in scaled.split(chunk)]
        return (torch.cat(images).float() / 2 + 0.5).clamp(0, 1)

    def student_reward(self, context: RewardContext) -> tuple[torch.Tensor, dict[str, float]]:
        images = self.decode(context.online)
        return self.scorer(images, context.captions).float(), {}
