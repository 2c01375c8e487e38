"""Tiny SD- and SDXL-shaped models built in code, for tests and smoke runs.

Everything here builds in well under a second, downloads nothing and is deterministic for a
given seed. The pieces have the same classes and interfaces as a real SD1.x/2.x teacher
(diffusers ``UNet2DConditionModel`` / ``AutoencoderKL``, transformers ``CLIPTextModel`` /
``CLIPTokenizer``, SD's scaled-linear DDPM schedule, docs/method.md §1), only with a few
thousand parameters, so code written against them runs unchanged on real checkpoints.

Sizes: 16x16 RGB images <-> 4x8x8 latents (VAE downsampling 2), text embeddings (B, 77, 32).
The SDXL-shaped teacher (``StableDiffusionXLPipeline`` layout) has two text encoders of width
32 (the second with a 32-dim projection), so its UNet cross-attends to (B, 77, 64) and takes
SDXL's micro-conditioning (``addition_embed_type="text_time"``: pooled text + 6 time ids);
its VAE has SDXL's scaling factor 0.13025 and its scheduler is an ``EulerDiscreteScheduler``,
as SDXL base ships, so code that assumes SD's 0.18215 or a DDIM/PNDM config shows up in tests.

Typical use::

    parts = tiny_sd_components(prediction_type="v_prediction", seed=0)
    unet, vae = parts["unet"], parts["vae"]
    save_tiny_sd_pipeline(tmp_path / "sd", prediction_type="epsilon")
    save_tiny_sdxl_pipeline(tmp_path / "sdxl")
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
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

PREDICTION_TYPES = ("epsilon", "v_prediction")
CROSS_ATTENTION_DIM = 32
LATENT_CHANNELS = 4
LATENT_SIZE = 8
IMAGE_SIZE = 16
TOKENIZER_MAX_LENGTH = 77
# SDXL shape: two text encoders side by side, 6 micro-conditioning ids embedded 8-wide each.
SDXL_CROSS_ATTENTION_DIM = 2 * CROSS_ATTENTION_DIM
SDXL_TIME_EMBED_DIM = 8
SDXL_POOLED_DIM = CROSS_ATTENTION_DIM  # text_encoder_2's projection_dim
SDXL_VAE_SCALING_FACTOR = 0.13025

# SD1.x/2.x training schedule (docs/method.md §1): scaled-linear betas, T = 1000.
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


def _tiny_unet(seed: int, **config) -> UNet2DConditionModel:
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
        attention_head_dim=8,
        norm_num_groups=32,
        **config,
    ).eval()


def tiny_unet(seed: int = 0, time_cond_proj_dim: int | None = None) -> UNet2DConditionModel:
    """A 2-level conditional UNet (blocks 32/64, one layer each) on 4x8x8 latents."""
    return _tiny_unet(
        seed, cross_attention_dim=CROSS_ATTENTION_DIM, time_cond_proj_dim=time_cond_proj_dim
    )


def tiny_sdxl_unet(seed: int = 0) -> UNet2DConditionModel:
    """`tiny_unet` with SDXL's conditioning: (B, 77, 64) text, pooled (B, 32) + time ids (B, 6)."""
    return _tiny_unet(
        seed,
        cross_attention_dim=SDXL_CROSS_ATTENTION_DIM,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=SDXL_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=6 * SDXL_TIME_EMBED_DIM + SDXL_POOLED_DIM,
    )


def tiny_vae(seed: int = 0, scaling_factor: float = 0.18215) -> AutoencoderKL:
    """A 2-level KL autoencoder: (B, 3, 16, 16) images in [-1, 1] <-> (B, 4, 8, 8) latents."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        scaling_factor=scaling_factor,
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


def tiny_text_encoder(
    vocab_size: int, seed: int = 0, with_projection: bool = False
) -> CLIPTextModel | CLIPTextModelWithProjection:
    """A 2-layer CLIP text transformer with hidden size 32 (= the UNet's cross-attention dim).

    `with_projection` gives SDXL's second encoder (``CLIPTextModelWithProjection``, whose
    ``text_embeds`` are the pooled conditioning).
    """
    torch.manual_seed(seed)
    model_cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
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
    return model_cls(config).eval()


def tiny_scheduler(
    kind: str = "ddim", prediction_type: str = "epsilon"
) -> DDIMScheduler | DDPMScheduler | EulerDiscreteScheduler:
    """SD's scaled-linear schedule as a "ddim" (SD pipeline settings), "ddpm" or "euler"
    (SDXL base's sampler settings) scheduler."""
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
    if kind == "euler":
        return EulerDiscreteScheduler(
            **SD_SCHEDULE, prediction_type=prediction_type, timestep_spacing="leading",
            steps_offset=1,
        )
    raise ValueError(f"scheduler kind={kind!r} is unknown; use 'ddim', 'ddpm' or 'euler'.")


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


def tiny_sdxl_components(prediction_type: str = "epsilon", seed: int = 0) -> dict:
    """All parts of a tiny SDXL teacher, keyed like ``StableDiffusionXLPipeline``'s arguments.

    Keys: unet, vae, text_encoder (CLIPTextModel), text_encoder_2 (CLIPTextModelWithProjection),
    tokenizer, tokenizer_2, scheduler (EulerDiscreteScheduler, as SDXL base ships), plus
    noise_scheduler (the DDPM training schedule). Same seed -> identical weights.
    """
    _check_prediction_type(prediction_type)
    tokenizer = tiny_tokenizer()
    return {
        "unet": tiny_sdxl_unet(seed=seed),
        "vae": tiny_vae(seed=seed + 1, scaling_factor=SDXL_VAE_SCALING_FACTOR),
        "text_encoder": tiny_text_encoder(len(tokenizer), seed=seed + 2),
        "text_encoder_2": tiny_text_encoder(len(tokenizer), seed=seed + 3, with_projection=True),
        "tokenizer": tokenizer,
        "tokenizer_2": tiny_tokenizer(),
        "scheduler": tiny_scheduler("euler", prediction_type),
        "noise_scheduler": tiny_scheduler("ddpm", prediction_type),
    }


def save_tiny_sdxl_pipeline(
    path: str | Path, prediction_type: str = "epsilon", seed: int = 0
) -> Path:
    """Save the tiny SDXL teacher as a ``StableDiffusionXLPipeline`` folder (loads offline)."""
    parts = tiny_sdxl_components(prediction_type=prediction_type, seed=seed)
    parts.pop("noise_scheduler")
    path = Path(path)
    StableDiffusionXLPipeline(**parts).save_pretrained(path)
    return path


def save_tiny_clip_model(path: str | Path, image_size: int = IMAGE_SIZE, seed: int = 0) -> Path:
    """A tiny transformers ``CLIPModel`` + tokenizer folder (a clipscore/pickscore checkpoint)."""
    path = Path(path)
    write_tiny_clip_vocab(path)
    tokenizer = CLIPTokenizer.from_pretrained(path, model_max_length=TOKENIZER_MAX_LENGTH)
    tokenizer.save_pretrained(path)
    vocab = len(tokenizer)
    text = dict(
        vocab_size=vocab, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=TOKENIZER_MAX_LENGTH,
        bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1,
    )
    vision = dict(
        image_size=image_size, patch_size=4, hidden_size=32, intermediate_size=37,
        num_hidden_layers=2, num_attention_heads=4,
    )
    torch.manual_seed(seed)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)
    CLIPModel(config).save_pretrained(path)
    return path
