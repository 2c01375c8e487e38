"""ImageReward v1.0 in the core environment (kind `imagereward-native`), docs/method.md §5.

The same reward as kind `imagereward` (the `image-reward` package in its own environment),
computed by `ImageRewardModel` (transformers' BLIP classes, imagereward_blip.py) from the same
`ImageReward.pt` and `med_config.json`. It imports where the train workers run, so the direct
RG-LCD reward (paper eq. 11) can take ImageReward's gradient: the paper's Fig. 3 experiment.

preprocessing: shortest side -> 224 bicubic (antialiased), center crop 224, OpenAI CLIP
mean/std, all tensor ops (preprocess.py); the tokenizer is bert-base-uncased with BLIP's two
added tokens, from `processor` (a local folder) or the local Hugging Face cache.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from reward_service.scorers.base import Scorer, check_batch, register_scorer
from reward_service.scorers.imagereward_blip import (
    ImageRewardModel,
    PromptTokens,
    blip_tokenizer,
    load_imagereward_model,
    med_config_path,
)
from reward_service.scorers.preprocess import PreprocessRecipe, preprocess
from reward_service.scorers.similarity import freeze, resolve_device

if TYPE_CHECKING:  # annotations only: the config validates kinds through this registry
    from reward_service.config import ScorerConfig

DEFAULT_TOKENIZER = "bert-base-uncased"


@register_scorer
class NativeImageRewardScorer(Scorer):
    """Frozen ImageReward on tensor-preprocessed images, differentiable, core environment."""

    kind = "imagereward-native"
    differentiable = True
    input_size = 224  # ImageReward v1.0's ViT-L/16 (a loaded model says its own)
    needs_checkpoint = True
    options = ("med_config",)

    @classmethod
    def from_spec(cls, spec: ScorerConfig) -> NativeImageRewardScorer:
        med_config = med_config_path(spec.checkpoint, spec.options.get("med_config"))
        model = load_imagereward_model(spec.checkpoint, med_config)
        tokenizer = blip_tokenizer(spec.processor or DEFAULT_TOKENIZER)
        return cls(spec.name, model, tokenizer, spec.device)

    def __init__(
        self, name: str, model: ImageRewardModel, tokenizer, device: str = "auto"
    ) -> None:
        self.name = name
        self.device = resolve_device(device)
        self.model = freeze(model).to(self.device)
        self.input_size = model.image_size
        self.recipe = PreprocessRecipe(size=model.image_size, mode="shortest-crop")
        self.tokens = PromptTokens(tokenizer)

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N,) normalised ImageReward scores (graph kept)."""
        check_batch(images, prompts)
        pixels = preprocess(images.to(self.device, torch.float32), self.recipe)
        ids, mask = self.tokens(prompts, self.device)
        return self.model(pixels, ids, mask).float()
