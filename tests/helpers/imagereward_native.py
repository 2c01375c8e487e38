"""ImageReward checkpoints with random weights for the core-environment scorer's tests.

`write_checkpoint` leaves what a user downloads from hub repo THUDM/ImageReward: an
`ImageReward.pt` in the package's key names (BLIP / timm), its `med_config.json`, and a
bert-base-uncased style tokenizer folder (a vocab.txt of the test prompts' words).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from reward_service.scorers.imagereward_blip import ImageRewardModel, VisionSpec

PROMPTS = ["a red circle on a blue background", "a small green square"]
# BERT-base with cross-attention, as THUDM/ImageReward's med_config.json.
MED_CONFIG = {
    "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02,
    "intermediate_size": 3072, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
    "model_type": "bert", "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 0,
    "type_vocab_size": 2, "vocab_size": 30524, "encoder_width": 768, "add_cross_attention": True,
}
TINY_MED_CONFIG = MED_CONFIG | {
    "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
    "num_hidden_layers": 2, "max_position_embeddings": 64, "vocab_size": 40,
}
TINY_VISION = VisionSpec(width=64, depth=2, patch_size=16, image_size=32, mlp_width=128)
NATIVE_TO_BLIP = (  # the inverse of imagereward_blip.VISION_RENAMES
    (r"^embeddings\.class_embedding$", "cls_token"),
    (r"^embeddings\.position_embedding$", "pos_embed"),
    (r"^embeddings\.patch_embedding\.", "patch_embed.proj."),
    (r"^encoder\.layers\.(\d+)\.layer_norm1\.", r"blocks.\1.norm1."),
    (r"^encoder\.layers\.(\d+)\.layer_norm2\.", r"blocks.\1.norm2."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.qkv\.", r"blocks.\1.attn.qkv."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.projection\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layers\.(\d+)\.mlp\.", r"blocks.\1.mlp."),
    (r"^post_layernorm\.", "norm."),
)


def blip_state_dict(model: ImageRewardModel) -> dict[str, torch.Tensor]:
    """The model's weights under the `image-reward` package's key names."""
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("vision."):
            name = key.removeprefix("vision.")
            for pattern, replacement in NATIVE_TO_BLIP:
                name = re.sub(pattern, replacement, name)
            key = "blip.visual_encoder." + name
        elif key.startswith("text."):
            key = "blip.text_encoder." + key.removeprefix("text.")
        state[key] = value.clone()
    width = model.text.config.hidden_size
    state["blip.text_proj.weight"] = torch.zeros(256, width)  # unused by the score
    return state


def write_tokenizer(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    words = sorted({w for p in PROMPTS for w in p.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    return folder


def write_checkpoint(
    folder: Path, med_config: dict = TINY_MED_CONFIG, vision: VisionSpec = TINY_VISION, seed=0
) -> tuple[ImageRewardModel, Path]:
    """(the model, ImageReward.pt path) with med_config.json and tokenizer/ beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = ImageRewardModel(med_config, vision).eval()
    with torch.no_grad():  # the package's MLP init gives near-constant scores: spread them
        for layer in model.mlp.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(0, layer.in_features ** -0.5)
    (folder / "med_config.json").write_text(json.dumps(med_config))
    checkpoint = folder / "ImageReward.pt"
    torch.save(blip_state_dict(model), checkpoint)
    write_tokenizer(folder / "tokenizer")
    return model, checkpoint
