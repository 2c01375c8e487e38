"""Tiny Stable-Diffusion-shaped models built in code, for tests and smoke runs.

Everything here builds in well under a second, downloads nothing and is deterministic for a
given seed. The pieces have the same classes and interfaces as a real SD1.x/2.x teacher
(diffusers ``UNet2DConditionModel`` / ``AutoencoderKL``, transformers ``CLIPTextModel`` /
``CLIPTokenizer``, SD's scaled-linear DDPM schedule, REFERENCE section 1), only with a few
thousand parameters, so code written against them runs unchanged on real checkpoints.

Sizes: 16x16 RGB images <-> 4x8x8 latents (VAE downsampling 2), text embeddings (B, 77, 32).

Typical use::

    parts = tiny_sd_components(prediction_type="v_prediction", seed=0)
    unet, vae = parts["unet"], parts["vae"]
    save_tiny_sd_pipeline(tmp_path / "sd", prediction_type="epsilon")
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

PREDICTION_TYPES = ("epsilon", "v_prediction")
CROSS_ATTENTION_DIM = 32
LATENT_CHANNELS = 4
LATENT_SIZE = 8
IMAGE_SIZE = 16
TOKENIZER_MAX_LENGTH = 77

# SD1.x/2.x training schedule (REFERENCE section 1): scaled-linear betas, T = 1000.
SD_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type={prediction_type!r} is not supported by the tiny teacher; "
            f"use one of {PREDICTION_TYPES}."
        )


def tiny_unet(seed: int = 0, time_cond_proj_dim: int | None = None) -> UNet2DConditionModel:
    """A 2-level conditional UNet (blocks 32/64, one layer each) on 4x8x8 latents."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CROSS_ATTENTION_DIM,
        attention_head_dim=8,
        norm_num_groups=32,
        time_cond_proj_dim=time_cond_proj_dim,
    ).eval()


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    """A 2-level KL autoencoder: (B, 3, 16, 16) images in [-1, 1] <-> (B, 4, 8, 8) latents."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=32,
        sample_size=IMAGE_SIZE,
    ).eval()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: every byte maps to one printable unicode character."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def write_tiny_clip_vocab(directory: str | Path) -> Path:
    """Write a character-level CLIP BPE vocabulary (vocab.json, merges.txt) into `directory`.

    Every byte is a token (plain and word-final ``</w>`` forms) plus a handful of merges, so
    any text tokenizes; ids stay below ~530, which keeps the text encoder tiny.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    alphabet = list(_bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges = ["t h", "th e</w>", "o n</w>", "i n</w>"]
    tokens += ["th", "the</w>", "on</w>", "in</w>"]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    merges_text = "#version: 0.2\n" + "\n".join(merges) + "\n"
    (directory / "merges.txt").write_text(merges_text, encoding="utf-8")
    return directory


def tiny_tokenizer() -> CLIPTokenizer:
    """A CLIPTokenizer loaded from a freshly written tiny vocabulary (max length 77)."""
    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_clip_vocab(tmp)
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=TOKENIZER_MAX_LENGTH)


def tiny_text_encoder(vocab_size: int, seed: int = 0) -> CLIPTextModel:
    """A 2-layer CLIP text transformer with hidden size 32 (= the UNet's cross-attention dim)."""
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=CROSS_ATTENTION_DIM,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=TOKENIZER_MAX_LENGTH,
        projection_dim=CROSS_ATTENTION_DIM,
        layer_norm_eps=1e-5,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    return CLIPTextModel(config).eval()


def tiny_scheduler(
    kind: str = "ddim", prediction_type: str = "epsilon"
) -> DDIMScheduler | DDPMScheduler:
    """SD's scaled-linear schedule as a "ddim" (SD pipeline default settings) or "ddpm" scheduler."""
    _check_prediction_type(prediction_type)
    if kind == "ddim":
        return DDIMScheduler(
            **SD_SCHEDULE,
            prediction_type=prediction_type,
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
        )
    if kind == "ddpm":
        return DDPMScheduler(**SD_SCHEDULE, prediction_type=prediction_type, clip_sample=False)
    raise ValueError(f"scheduler kind={kind!r} is unknown; use 'ddim' or 'ddpm'.")


def tiny_sd_components(prediction_type: str = "epsilon", seed: int = 0) -> dict:
    """All parts of a tiny SD teacher, keyed like ``StableDiffusionPipeline``'s arguments.

    Keys: unet, vae, text_encoder, tokenizer, scheduler (DDIMScheduler), plus noise_scheduler
    (DDPMScheduler with the same schedule and prediction type, as used for training).
    Models are in eval mode, float32, on CPU. Same seed -> identical weights.
    """
    _check_prediction_type(prediction_type)
    tokenizer = tiny_tokenizer()
    return {
        "unet": tiny_unet(seed=seed),
        "vae": tiny_vae(seed=seed + 1),
        "text_encoder": tiny_text_encoder(len(tokenizer), seed=seed + 2),
        "tokenizer": tokenizer,
        "scheduler": tiny_scheduler("ddim", prediction_type),
        "noise_scheduler": tiny_scheduler("ddpm", prediction_type),
    }


def tiny_sd_pipeline(prediction_type: str = "epsilon", seed: int = 0) -> StableDiffusionPipeline:
    """The tiny teacher as a ``StableDiffusionPipeline`` (no safety checker)."""
    parts = tiny_sd_components(prediction_type=prediction_type, seed=seed)
    parts.pop("noise_scheduler")
    return StableDiffusionPipeline(
        **parts,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_tiny_sd_pipeline(
    path: str | Path, prediction_type: str = "epsilon", seed: int = 0
) -> Path:
    """Save the tiny teacher as a pipeline folder that ``from_pretrained(path)`` loads offline."""
    path = Path(path)
    tiny_sd_pipeline(prediction_type=prediction_type, seed=seed).save_pretrained(path)
    return path
