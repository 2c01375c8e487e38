"""Shared machinery of the dual-encoder reward models (CLIPScore, PickScore, HPSv2.1, toy CLIP).

Each of them scores an (image, prompt) pair as a (possibly scaled) cosine between the image
and text embeddings (docs/method.md §5). The image side runs with gradients through the
tensor preprocessing; the text side runs under `no_grad` and is cached per prompt, since the
prompts of a training run repeat and the text tower never needs a gradient.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections import OrderedDict
from pathlib import Path

import torch

from reward_service.scorers.base import Scorer, check_batch
from reward_service.scorers.preprocess import PreprocessRecipe, preprocess
from rglcd import storage

TEXT_CACHE_SIZE = 4096  # prompts kept per scorer; bounded so a long-lived service stays small


def local_json(folder: str | Path | None, filename: str) -> dict | None:
    """A small json from a model folder (a path, pkg:// location or object-store URI), or None
    for a hub id or a missing file (never touches the hub)."""
    if folder is None:
        return None
    location = storage.join(str(folder), filename)
    try:
        if not storage.is_file(location):
            return None
        return json.loads(storage.read_text(location))
    except (OSError, ValueError):
        return None


def resolve_device(device: str) -> torch.device:
    """'auto' -> the first CUDA device when there is one, else CPU; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """eval() + requires_grad_(False): the reward model is a fixed judge, never trained here."""
    module.eval()
    module.requires_grad_(False)
    return module


class EmbeddingSimilarityScorer(Scorer):
    """reward = scale * cos(image_embedding, text_embedding); subclasses supply the encoders."""

    differentiable = True

    def __init__(self, name: str, recipe: PreprocessRecipe, device: torch.device) -> None:
        self.name = name
        self.recipe = recipe
        self.input_size = recipe.size
        self.device = device
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @abstractmethod
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised model input (N, 3, S, S) -> (N, D) image embeddings (not unit length)."""

    @abstractmethod
    def encode_texts(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> (N, D) text embeddings (not unit length); called under no_grad."""

    def logit_scale(self) -> torch.Tensor | float:
        """Multiplier of the cosine; 1.0 means the raw cosine is the reward."""
        return 1.0

    def text_embeddings(self, prompts: list[str]) -> torch.Tensor:
        """(N, D) unit text embeddings, computed once per distinct prompt."""
        missing = list(dict.fromkeys(p for p in prompts if p not in self._text_cache))
        if missing:
            with torch.no_grad():
                feats = self.encode_texts(missing)
                feats = feats / feats.norm(dim=-1, keepdim=True)
            for prompt, feat in zip(missing, feats, strict=True):
                self._text_cache[prompt] = feat
        embeddings = torch.stack([self._text_cache[p] for p in prompts])
        for prompt in prompts:
            self._text_cache.move_to_end(prompt)
        while len(self._text_cache) > TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return embeddings

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N,) rewards, differentiable w.r.t. `images`."""
        check_batch(images, prompts)
        pixels = preprocess(images.to(self.device, torch.float32), self.recipe)
        image_emb = self.encode_images(pixels)  # (N, D)
        image_emb = image_emb / image_emb.norm(dim=-1, keepdim=True)
        text_emb = self.text_embeddings(prompts).to(image_emb.dtype)  # (N, D)
        cosine = (image_emb * text_emb).sum(dim=-1)  # (N,)
        return (self.logit_scale() * cosine).float()
