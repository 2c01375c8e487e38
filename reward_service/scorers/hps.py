"""HPSv2.1: an open_clip ViT-H-14 fine-tuned on human preferences (docs/method.md §5).

reward = cos(image, text), no logit scale (papers report x100; SD-class models ~25-31).
Preprocessing: longest side -> 224 bicubic, zero-pad to 224 (open_clip's "longest" mode).

The checkpoint `HPS_v2.1_compressed.pt` (hub repo `xswu/HPSv2`) is a dict with `state_dict`;
`open_clip.create_model_and_transforms(arch, pretrained=<local .pt>)` builds the architecture
from the package's config and loads it without fetching the base weights. The `hpsv2` package
itself is not used: it pins old pytest/protobuf, reloads the checkpoint on every call and runs
under `no_grad` (docs/method.md §7 and §5).
"""

from __future__ import annotations

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

if TYPE_CHECKING:  # annotations only: the config validates kinds through this registry
    from reward_service.config import ScorerConfig

DEFAULT_ARCH = "ViT-H-14"
HPS_HUB_REPO = "xswu/HPSv2"
HPS_V21_FILE = "HPS_v2.1_compressed.pt"


def resolve_checkpoint(checkpoint: str, filename: str = HPS_V21_FILE) -> str:
    """A local .pt path as is; a hub repo id through the local HF cache (offline, no download)."""
    if Path(checkpoint).is_file():
        return checkpoint
    if Path(checkpoint).exists() or checkpoint.count("/") != 1:
        raise ValueError(
            f"HPS checkpoint {checkpoint!r} is not a file; give the path of {filename} "
            f"(from hub repo {HPS_HUB_REPO}) or a hub repo id whose file is in the local cache"
        )
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id=checkpoint, filename=filename)


def register_model_config(config_path: str) -> str:
    """Make an open_clip architecture json known to open_clip; returns its name (file stem)."""
    path = Path(config_path)
    if not path.is_file():
        raise ValueError(f"open_clip model config {config_path!r} does not exist")
    import open_clip

    open_clip.add_model_config(path)
    return path.stem


@register_scorer
class HpsScorer(EmbeddingSimilarityScorer):
    """A frozen open_clip model scoring cos(image, text) with HPS's longest-side/pad recipe."""

    kind = "hpsv2.1"
    input_size = 224
    needs_checkpoint = True
    options = ("arch", "model_config")

    @classmethod
    def from_spec(cls, spec: ScorerConfig) -> HpsScorer:
        return cls.from_checkpoint(
            spec.name,
            spec.checkpoint,
            arch=spec.options.get("arch", DEFAULT_ARCH),
            model_config=spec.options.get("model_config"),
            device=spec.device,
        )

    @classmethod
    def native_input_size(cls, spec: ScorerConfig) -> int:
        """From options.model_config's vision_cfg when that json is local."""
        if not spec.options.get("model_config"):
            return cls.input_size
        location = str(spec.options["model_config"])  # a path or URI, read in place
        folder, name = location.rsplit("/", 1) if "/" in location else (".", location)
        config = local_json(folder, name) or {}
        return int(config.get("vision_cfg", {}).get("image_size", cls.input_size))

    def __init__(self, name: str, model: torch.nn.Module, tokenizer, device: str = "auto") -> None:
        image_size = model.visual.image_size
        size = image_size[0] if isinstance(image_size, tuple | list) else int(image_size)
        recipe = PreprocessRecipe(size=size, mode="longest-pad", mean=CLIP_MEAN, std=CLIP_STD)
        super().__init__(name, recipe, resolve_device(device))
        self.model = freeze(model).to(self.device)
        self.tokenizer = tokenizer

    @classmethod
    def from_checkpoint(
        cls,
        name: str,
        checkpoint: str,
        arch: str = DEFAULT_ARCH,
        model_config: str | None = None,
        device: str = "auto",
    ) -> HpsScorer:
        """Build `arch` (optionally registered from a json `model_config`) and load `checkpoint`."""
        import open_clip  # with the weights only: describing the kind needs none of it

        if model_config is not None:
            arch = register_model_config(model_config)
        if open_clip.get_model_config(arch) is None:
            raise ValueError(
                f"open_clip has no architecture {arch!r}; set options.arch to one of "
                f"open_clip.list_models() or pass options.model_config (a json file)"
            )
        weights = resolve_checkpoint(checkpoint)
        model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=weights)
        return cls(name, model, open_clip.get_tokenizer(arch), device)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def encode_texts(self, prompts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(prompts).to(self.device))
