"""ImageReward v1.0 rebuilt on transformers' BLIP classes, so it imports in the core environment.

ImageReward = BLIP's ViT-L/16 at 224 px + BERT-base with cross-attention to the image tokens
+ a linear MLP head 768 -> 1024 -> 128 -> 64 -> 16 -> 1 (no activations between its layers):

    image_embeds = vit(pixels)                                     # (N, 197, 1024)
    cls = bert(ids, mask, cross_attention=image_embeds)[:, 0]      # (N, 768)
    reward = (mlp(cls) - 0.16717362830052426) / 1.0333394966054072

`BlipVisionModel` is BLIP's ViT (fused qkv, pre-norm blocks, a final LayerNorm) and
`BlipTextModel` is BLIP's `med.py` BERT (no token-type embeddings, cross-attention in every
layer), so the official `ImageReward.pt` (the `image-reward` package's state dict) loads by
renaming keys (`blip_to_native_key`). The package itself cannot be imported here (its BLIP
needs transformers 4.46; reward_service/scorers/imagereward.py runs it in its own environment).
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

TEXT_MAX_LENGTH = 35  # the package's tokenizer setting
TOKEN_CACHE_SIZE = 4096  # prompts whose tokens are kept (least recently used dropped first)
REWARD_MEAN = 0.16717362830052426  # the package's normalisation of the MLP output
REWARD_STD = 1.0333394966054072
MLP_WIDTHS = (1024, 128, 64, 16, 1)
MLP_DROPOUTS = (0.2, 0.2, 0.1)  # after the first three layers (indices kept for the state dict)
VIT_HEAD_DIM = 64  # BLIP's ViT-B (768 / 12) and ViT-L (1024 / 16)
# Checkpoint keys that ImageReward's score never uses (BLIP's contrastive projections) or that
# are buffers rebuilt here.
UNUSED_KEYS = re.compile(r"^blip\.(vision_proj|text_proj)\.|position_ids$")
VISION_RENAMES = (  # BLIP / timm ViT name -> BlipVisionModel name (after "blip.visual_encoder.")
    (r"^cls_token$", "embeddings.class_embedding"),
    (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"^blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp."),
    (r"^norm\.", "post_layernorm."),
)


@dataclass(frozen=True)
class VisionSpec:
    """BLIP's ViT; the defaults are ImageReward's ViT-L/16 at 224 px."""

    width: int = 1024
    depth: int = 24
    patch_size: int = 16
    image_size: int = 224
    mlp_width: int = 4096

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> VisionSpec:
        """The ViT's sizes from an ImageReward state dict (BLIP key names)."""
        prefix = "blip.visual_encoder."
        patch = state[prefix + "patch_embed.proj.weight"]  # (width, 3, p, p)
        tokens = state[prefix + "pos_embed"].shape[1] - 1  # (image_size / p) ** 2 patches
        depth = 1 + max(int(m.group(1)) for k in state
                        if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k)))
        return cls(
            width=patch.shape[0], depth=depth, patch_size=patch.shape[-1],
            image_size=round(tokens ** 0.5) * patch.shape[-1],
            mlp_width=state[prefix + "blocks.0.mlp.fc1.weight"].shape[0],
        )


def vision_config(spec: VisionSpec):
    from transformers import BlipVisionConfig

    return BlipVisionConfig(
        hidden_size=spec.width, intermediate_size=spec.mlp_width, num_hidden_layers=spec.depth,
        num_attention_heads=spec.width // VIT_HEAD_DIM, image_size=spec.image_size,
        patch_size=spec.patch_size, layer_norm_eps=1e-6, hidden_act="gelu",  # nn.GELU, eps 1e-6
    )


def text_config(med_config: dict, encoder_width: int):
    """BLIP's med_config.json (a BertConfig) -> BlipTextConfig with cross-attention layers."""
    from transformers import BlipTextConfig

    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "max_position_embeddings", "layer_norm_eps", "hidden_act",
            "pad_token_id")
    missing = [k for k in keys if k not in med_config]
    if missing:
        raise ValueError(f"med_config lacks {missing}; use ImageReward's med_config.json")
    return BlipTextConfig(
        **{k: med_config[k] for k in keys}, encoder_hidden_size=encoder_width, is_decoder=True,
    )


class RewardHead(nn.Module):
    """The package's MLP (its `mlp.layers` indices, so the state dict keys match)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, out in enumerate(MLP_WIDTHS):
            layers.append(nn.Linear(width, out))
            if i < len(MLP_DROPOUTS):
                layers.append(nn.Dropout(MLP_DROPOUTS[i]))
            width = out
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class ImageRewardModel(nn.Module):
    """ViT + cross-attending BERT + MLP head; `forward` returns normalised rewards (N,)."""

    def __init__(self, med_config: dict, vision: VisionSpec = VisionSpec()) -> None:
        from transformers import BlipTextModel, BlipVisionModel

        super().__init__()
        self.vision = BlipVisionModel(vision_config(vision))
        self.text = BlipTextModel(text_config(med_config, vision.width), add_pooling_layer=False)
        self.mlp = RewardHead(self.text.config.hidden_size)
        self.image_size = vision.image_size

    def forward(
        self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """(N, 3, S, S) CLIP-normalised pixels, (N, L) tokens -> (N,) rewards, about -2..+2."""
        image_embeds = self.vision(pixel_values=pixels).last_hidden_state  # (N, 1 + P, width)
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=pixels.device)
        text = self.text(
            input_ids=input_ids, attention_mask=attention_mask,
            encoder_hidden_states=image_embeds, encoder_attention_mask=image_atts,
        )
        cls_features = text.last_hidden_state[:, 0, :].float()  # (N, 768)
        rewards = self.mlp(cls_features).squeeze(-1)  # (N,)
        return (rewards - REWARD_MEAN) / REWARD_STD

    def load_blip_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load the package's state dict (BLIP names); ValueError on missing or unknown keys."""
        renamed = {}
        unknown = []
        for key, value in state.items():
            native = blip_to_native_key(key)
            if native is None:
                if not UNUSED_KEYS.search(key):
                    unknown.append(key)
            else:
                renamed[native] = value
        result = self.load_state_dict(renamed, strict=False)
        unknown += result.unexpected_keys
        if unknown or result.missing_keys:
            raise ValueError(
                "not an ImageReward state dict: "
                f"{len(result.missing_keys)} missing keys (e.g. {result.missing_keys[:3]}), "
                f"{len(unknown)} unknown keys (e.g. {unknown[:3]}); give the ImageReward.pt "
                "of hub repo THUDM/ImageReward"
            )


def blip_to_native_key(key: str) -> str | None:
    """An `ImageReward.pt` key -> this model's key, or None for a key this model has no use for."""
    if UNUSED_KEYS.search(key):
        return None
    if key.startswith("mlp."):
        return key
    if key.startswith("blip.text_encoder."):
        return "text." + key.removeprefix("blip.text_encoder.")
    if key.startswith("blip.visual_encoder."):
        name = key.removeprefix("blip.visual_encoder.")
        for pattern, replacement in VISION_RENAMES:
            renamed, count = re.subn(pattern, replacement, name)
            if count:
                return "vision." + renamed
    return None


def load_imagereward_model(checkpoint: str | Path, med_config: str | Path) -> ImageRewardModel:
    """ImageRewardModel from the official `ImageReward.pt` and its `med_config.json` (local)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "blip.visual_encoder.pos_embed" not in state:
        raise ValueError(
            f"{checkpoint} is not ImageReward's state dict (no blip.visual_encoder.pos_embed); "
            "give the ImageReward.pt of hub repo THUDM/ImageReward"
        )
    config = json.loads(Path(med_config).read_text(encoding="utf-8"))
    model = ImageRewardModel(config, VisionSpec.from_state_dict(state))
    model.load_blip_state_dict(state)
    return model


class PromptTokens:
    """BLIP's tokenizer settings (padded to 35 tokens), each prompt tokenized once (LRU)."""

    def __init__(self, tokenizer, size: int = TOKEN_CACHE_SIZE) -> None:
        self.tokenizer, self.size = tokenizer, size
        self._tokens: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def __call__(
        self, prompts: list[str], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 35) input ids and attention mask on `device`."""
        for prompt in prompts:
            if prompt in self._tokens:
                self._tokens.move_to_end(prompt)
                continue
            tokens = self.tokenizer(
                prompt, padding="max_length", truncation=True, max_length=TEXT_MAX_LENGTH,
                return_tensors="pt",
            )
            self._tokens[prompt] = (tokens["input_ids"][0], tokens["attention_mask"][0])
        # Read this batch's entries before evicting, so none of them can be the one evicted.
        ids = torch.stack([self._tokens[p][0] for p in prompts]).to(device)
        mask = torch.stack([self._tokens[p][1] for p in prompts]).to(device)
        while len(self._tokens) > self.size:
            self._tokens.popitem(last=False)
        return ids, mask


def blip_tokenizer(source: str):
    """BLIP's `init_tokenizer`: bert-base-uncased plus its [DEC] / [ENC] tokens (vocab 30524),
    from a local folder or the local Hugging Face cache."""
    from transformers import BertTokenizer

    try:
        tokenizer = BertTokenizer.from_pretrained(source)
    except OSError as err:
        raise ValueError(
            f"could not load ImageReward's tokenizer from {source!r} ({err}); set the scorer's "
            "`processor` to a local bert-base-uncased folder, or put bert-base-uncased in the "
            "local Hugging Face cache"
        ) from err
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


def med_config_path(checkpoint: str, med_config: str | None) -> str:
    """The med_config.json to use: the option, else the one next to the checkpoint."""
    if not Path(checkpoint).is_file():
        raise ValueError(
            f"ImageReward checkpoint {checkpoint!r} is not a file; download ImageReward.pt from "
            "hub repo THUDM/ImageReward on a connected machine and give its path"
        )
    path = med_config or str(Path(checkpoint).with_name("med_config.json"))
    if not Path(path).is_file():
        raise ValueError(
            f"ImageReward med_config {path!r} is not a file; put med_config.json (hub repo "
            "THUDM/ImageReward) next to the checkpoint or set options.med_config"
        )
    return path
