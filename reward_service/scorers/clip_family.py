"""CLIP-family reward models on transformers `CLIPModel`: CLIPScore, PickScore, the toy CLIP.

docs/method.md §5:
  CLIPScore  reward = cos(image, text)                        (reported as 100 * max(cos, 0))
  PickScore  reward = logit_scale.exp() * cos(image, text)    (about 18-24 on real images)
Both: shortest side -> 224 bicubic, center crop, OpenAI CLIP mean/std. The input size and
mean/std are read from the processor's `preprocessor_config.json` when one is there (the toy
CLIP ships one with its own statistics), otherwise the vision tower's size and CLIP's stats.

transformers 5 returns output objects from `get_image_features` / `get_text_features`; the
projected embedding is `.pooler_output` (torchmetrics' CLIPScore breaks on exactly this).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from reward_service.scorers.base import register_scorer
from reward_service.scorers.preprocess import CLIP_MEAN, CLIP_STD, PreprocessRecipe
from reward_service.scorers.similarity import (
    EmbeddingSimilarityScorer,
    freeze,
    local_json,
    resolve_device,
)
from rglcd.hf_compat import projected_features

if TYPE_CHECKING:  # transformers' model classes load with the weights (from_pretrained);
    # ScorerConfig for annotations only (the config validates kinds through the registry)
    from transformers import CLIPModel, PreTrainedTokenizerBase

    from reward_service.config import ScorerConfig

PREPROCESSOR_FILE = "preprocessor_config.json"
PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"  # PickScore ships no processor


def _side(value: int | dict | None) -> int | None:
    """An HF processor size entry (int or {"height", "width"} / {"shortest_edge"}) as one side."""
    if value is None or isinstance(value, int):
        return value
    if "shortest_edge" in value:
        return int(value["shortest_edge"])
    if value.get("height") != value.get("width"):
        raise ValueError(f"non-square processor size {value}; CLIP scorers expect square input")
    return int(value["height"])


def recipe_from_processor(path_or_id: str, default_size: int) -> PreprocessRecipe:
    """Shortest-side/center-crop recipe with the processor config's size and mean/std, if any."""
    from transformers.utils import cached_file

    config_file = cached_file(
        path_or_id, PREPROCESSOR_FILE, _raise_exceptions_for_missing_entries=False
    )
    if config_file is None:
        return PreprocessRecipe(size=default_size)
    config = json.loads(Path(config_file).read_text(encoding="utf-8"))
    size = _side(config.get("crop_size")) or _side(config.get("size")) or default_size
    return PreprocessRecipe(
        size=size,
        mode="shortest-crop",
        mean=tuple(config.get("image_mean", CLIP_MEAN)),
        std=tuple(config.get("image_std", CLIP_STD)),
    )


class ClipFamilyScorer(EmbeddingSimilarityScorer):
    """A frozen `CLIPModel` as a reward: raw cosine, or `logit_scale.exp()` x cosine."""

    def __init__(
        self,
        name: str,
        model: CLIPModel,
        tokenizer: PreTrainedTokenizerBase,
        recipe: PreprocessRecipe,
        use_logit_scale: bool,
        device: str = "auto",
    ) -> None:
        super().__init__(name, recipe, resolve_device(device))
        self.model = freeze(model).to(self.device)
        self.tokenizer = tokenizer
        self.use_logit_scale = use_logit_scale
        max_positions = model.config.text_config.max_position_embeddings
        self.max_length = min(int(tokenizer.model_max_length), max_positions)

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        checkpoint: str,
        processor: str | None = None,
        use_logit_scale: bool = False,
        device: str = "auto",
    ) -> ClipFamilyScorer:
        """Load model from `checkpoint` and tokenizer/preprocessing from `processor` (or it)."""
        from transformers import AutoTokenizer, CLIPModel

        model = CLIPModel.from_pretrained(checkpoint)
        processor = processor or checkpoint
        tokenizer = AutoTokenizer.from_pretrained(processor)
        recipe = recipe_from_processor(processor, model.config.vision_config.image_size)
        return cls(name, model, tokenizer, recipe, use_logit_scale, device)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return projected_features(self.model.get_image_features(pixel_values=pixels))

    def encode_texts(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(
            prompts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        output = self.model.get_text_features(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        )
        return projected_features(output)

    def logit_scale(self) -> torch.Tensor | float:
        if not self.use_logit_scale:
            return 1.0
        return self.model.logit_scale.exp()


def clip_input_size(checkpoint: str | Path | None, default: int) -> int:
    """The vision tower's input size from a local CLIP folder's config.json, else `default`."""
    config = local_json(checkpoint, "config.json")
    if config is None:
        return default
    return int(config.get("vision_config", {}).get("image_size", default))


@register_scorer
class ClipScoreScorer(ClipFamilyScorer):
    """CLIPScore: the raw cosine of a transformers CLIP model."""

    kind = "clipscore"
    input_size = 224
    needs_checkpoint = True

    @classmethod
    def from_spec(cls, spec: ScorerConfig) -> ClipScoreScorer:
        return cls.from_pretrained(
            spec.name, spec.checkpoint, processor=spec.processor, device=spec.device
        )

    @classmethod
    def native_input_size(cls, spec: ScorerConfig) -> int:
        return clip_input_size(spec.checkpoint, cls.input_size)


@register_scorer
class PickScoreScorer(ClipScoreScorer):
    """PickScore: `logit_scale.exp()` x the cosine of a CLIP fine-tuned on human preferences."""

    kind = "pickscore"

    @classmethod
    def from_spec(cls, spec: ScorerConfig) -> PickScoreScorer:
        processor = spec.processor
        if processor is None and spec.checkpoint == PICKSCORE_MODEL:
            processor = PICKSCORE_PROCESSOR
        return cls.from_pretrained(
            spec.name, spec.checkpoint, processor=processor, use_logit_scale=True,
            device=spec.device,
        )
