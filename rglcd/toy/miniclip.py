"""The miniature CLIP: a transformers ``CLIPModel`` over 32x32 toy images and toy captions.

Its text tower is the toy teacher's text encoder; the whole model is the toy CLIPScore reward.
The tokenizer is a real ``CLIPTokenizer`` (byte-level BPE): every byte is a token, and merges
build each word of the caption grammar into one ``word</w>`` token, so any text tokenizes and
grammar words cost one id each. Images: [0, 1] RGB, resized to 32x32, normalised with the
OpenAI CLIP mean/std (docs/method.md §5), as recorded in ``preprocess.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

from rglcd.hf_compat import projected_features
from rglcd.toy.scenes import COLOUR_NAMES, IMAGE_SIZE, SHAPES, SIZES

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TEXT_HIDDEN = 64  # = the toy UNet's cross_attention_dim
MAX_LENGTH = 77  # SD's tokenizer length, so code written for SD runs unchanged
PREPROCESS_FILE = "preprocess.json"
GRAMMAR_WORDS = ("a", "on", "background", *SIZES, *COLOUR_NAMES, *SHAPES)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: each byte maps to one printable unicode character."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def _word_merges(word: str) -> list[tuple[str, str]]:
    """Left-to-right merges that build `word</w>` from its characters."""
    pieces = list(word[:-1]) + [word[-1] + "</w>"]
    merges, built = [], pieces[0]
    for piece in pieces[1:]:
        merges.append((built, piece))
        built += piece
    return merges


def write_caption_tokenizer(directory: str | Path) -> CLIPTokenizer:
    """Write vocab.json + merges.txt for the caption vocabulary and load them as a tokenizer."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    alphabet = list(_bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges: list[tuple[str, str]] = []
    for word in GRAMMAR_WORDS:
        for pair in _word_merges(word):
            if pair not in merges:
                merges.append(pair)
    for left, right in merges:
        if left + right not in tokens:
            tokens.append(left + right)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer.from_pretrained(directory, model_max_length=MAX_LENGTH)
    tokenizer.save_pretrained(directory)
    return tokenizer


def miniclip_config(vocab_size: int) -> CLIPConfig:
    """Text: 2 layers, hidden 64. Vision: ViT 32x32, patch 4 (64 patches), 3 layers, hidden 64.

    Patch 4: the small shapes (9-13 px) span only about 2x2 patches of 8 pixels, too coarse
    to tell a cross from a square (docs/toy-world.md); patch 4 costs more per step.
    """
    text = {
        "vocab_size": vocab_size,
        "hidden_size": TEXT_HIDDEN,
        "intermediate_size": 4 * TEXT_HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": MAX_LENGTH,
        "bos_token_id": vocab_size - 2,
        "eos_token_id": vocab_size - 1,
        "pad_token_id": vocab_size - 1,
    }
    vision = {
        "image_size": IMAGE_SIZE,
        "patch_size": 4,
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=64)


def build_miniclip(vocab_size: int, seed: int = 0) -> CLIPModel:
    torch.manual_seed(seed)
    return CLIPModel(miniclip_config(vocab_size))


def normalise_images(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 3, 32, 32) CLIP-normalised; differentiable."""
    if images.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
        images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                               antialias=True, align_corners=False)
    mean = images.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def write_preprocess(directory: str | Path) -> None:
    info = {"image_size": IMAGE_SIZE, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
            "pixel_range": [0.0, 1.0], "resize": "bilinear, antialias"}
    (Path(directory) / PREPROCESS_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")


def load_miniclip(directory: str | Path) -> tuple[CLIPModel, CLIPTokenizer]:
    """The trained mini CLIP (float32, eval, frozen) and its tokenizer, offline."""
    directory = Path(directory)
    if not (directory / "config.json").exists():
        raise ValueError(
            f"no mini CLIP at {directory}; build it with "
            "`rglcd-build-toy-world --stages data,clip`."
        )
    model = CLIPModel.from_pretrained(directory, dtype=torch.float32).eval()
    model.requires_grad_(False)
    return model, CLIPTokenizer.from_pretrained(directory)


def text_features(model: CLIPModel, tokenizer: CLIPTokenizer, texts: list[str]) -> torch.Tensor:
    """(N, 64) L2-normalised text embeddings."""
    device = next(model.parameters()).device
    ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids.to(device)
    return F.normalize(projected_features(model.get_text_features(input_ids=ids)), dim=-1)


def image_features(model: CLIPModel, images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 64) L2-normalised image embeddings; differentiable."""
    pixels = normalise_images(images)
    return F.normalize(projected_features(model.get_image_features(pixel_values=pixels)), dim=-1)


def caption_ranking_accuracy(
    model: CLIPModel, tokenizer: CLIPTokenizer, images: torch.Tensor, captions: list[str],
    candidates: list[str],
) -> float:
    """Fraction of images whose own caption scores highest among `candidates`."""
    with torch.no_grad():
        cand = text_features(model, tokenizer, candidates)  # (K, D)
        img = image_features(model, images)  # (N, D)
    best = (img @ cand.T).argmax(dim=1)
    index = {c: i for i, c in enumerate(candidates)}
    truth = torch.tensor([index[c] for c in captions], device=best.device)
    return (best == truth).float().mean().item()


class MiniClipFeatures(nn.Module):
    """Image-feature extractor for torchmetrics' FID: [0, 1] images -> (N, 64) embeddings."""

    def __init__(self, model: CLIPModel):
        super().__init__()
        self.model = model
        self.num_features = model.config.projection_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return image_features(self.model, images.float())
