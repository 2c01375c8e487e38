"""Stage "unet": train the toy teacher and save the diffusers StableDiffusionPipeline folder.

SD's recipe in miniature: epsilon prediction, scaled-linear DDPM schedule (0.00085, 0.012,
T = 1000), frozen text encoder (the mini CLIP's text tower), 10% of captions dropped to ""
for classifier-free guidance, AdamW with warm-up, EMA weights saved. Because latents and the
frozen text embeddings never change, both are computed once before training.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPModel, CLIPTextModel, CLIPTokenizer

from orchestration.toy_build.common import BuildSettings, budgeted_steps, load_split, warmup_lr
from rglcd.toy.miniclip import TEXT_HIDDEN

BATCH = 64
LR = 1e-3
EMA_DECAY = 0.995  # short runs: a 0.999 average would still hold the early, poor weights
CAPTION_DROPOUT = 0.1
BLOCKS = (64, 128)
MIN_SNR_GAMMA = 5.0
SD_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
               "beta_schedule": "scaled_linear"}


def build_toy_unet(seed: int) -> UNet2DConditionModel:
    """Conditional UNet on 4x8x8 latents, blocks (64, 128), cross-attention dim 64 (3.2M).

    The sizes of docs/method.md §8; a (32, 64) net trained for the same wall time gets shapes
    wrong on most samples.
    """
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=BLOCKS,
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def load_text_encoder(miniclip_dir: Path) -> tuple[CLIPTextModel, CLIPTokenizer]:
    """The mini CLIP's text tower as a standalone, frozen, float32 CLIPTextModel."""
    clip = CLIPModel.from_pretrained(miniclip_dir, dtype=torch.float32)
    text_encoder = clip.text_model  # a CLIPTextModel in transformers 5
    assert isinstance(text_encoder, CLIPTextModel)
    return text_encoder.eval().requires_grad_(False), CLIPTokenizer.from_pretrained(miniclip_dir)


@torch.no_grad()
def encode_texts(text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
                 texts: list[str]) -> torch.Tensor:
    """(N, 77, 64) last hidden states, exactly as StableDiffusionPipeline encodes prompts."""
    ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    return torch.cat([text_encoder(ids[i : i + 128])[0] for i in range(0, len(ids), 128)])


@torch.no_grad()
def encode_latent_moments(vae: AutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    """(N, 8, 8, 8): posterior mean and std of every image, sampled afresh each step."""
    out = []
    for i in range(0, len(images), 500):
        dist = vae.encode(images[i : i + 500] * 2 - 1).latent_dist
        out.append(torch.cat([dist.mean, dist.std], dim=1))
    return torch.cat(out)


def diffusion_loss(unet, scheduler: DDPMScheduler, latents: torch.Tensor,
                   text: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Epsilon-prediction MSE at uniform timesteps, Min-SNR-5 weighted.

    Min-SNR weighting (Hang et al. 2023; eps-form weight min(SNR, 5) / SNR) only re-weights
    the DDPM objective across timesteps; it converges several times faster, which the short
    CPU budget needs.
    """
    # Random draws on the CPU generator, so a seed gives the same draws on every device.
    noise = torch.randn(latents.shape, generator=gen).to(latents.device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), generator=gen)
    abar = scheduler.alphas_cumprod[t]
    snr = abar / (1 - abar)
    weight = (snr.clamp(max=MIN_SNR_GAMMA) / snr).to(latents.device)  # (B,)
    t = t.to(latents.device)
    noisy = scheduler.add_noise(latents, noise, t)
    error = F.mse_loss(unet(noisy, t, encoder_hidden_states=text).sample, noise, reduction="none")
    return (weight * error.mean(dim=(1, 2, 3))).mean()


def save_pipeline(unet, vae, text_encoder, tokenizer, out_dir: Path) -> None:
    """fp16 safetensors pipeline folder, DDIM scheduler configured as SD ships it."""
    scheduler = DDIMScheduler(**SD_SCHEDULE, prediction_type="epsilon", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(
        vae=copy.deepcopy(vae).half(), text_encoder=copy.deepcopy(text_encoder).half(),
        tokenizer=tokenizer, unet=copy.deepcopy(unet).half(), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    for config_file in out_dir.glob("*/config.json"):  # no machine paths in the artifact
        config = json.loads(config_file.read_text())
        if "_name_or_path" in config:
            config["_name_or_path"] = f"toy-{config_file.parent.name}"
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def train_teacher(settings: BuildSettings, vae_dir: Path, miniclip_dir: Path,
                  out_dir: Path) -> dict:
    images, captions = load_split(settings, "train")
    images, captions = images[: settings.unet_images], captions[: settings.unet_images]
    vae = AutoencoderKL.from_pretrained(vae_dir, dtype=torch.float32).eval().requires_grad_(False)
    text_encoder, tokenizer = load_text_encoder(miniclip_dir)
    vocab = sorted(set(captions))
    text_table = encode_texts(text_encoder, tokenizer, ["", *vocab])  # row 0: unconditional
    caption_rows = torch.tensor([vocab.index(c) + 1 for c in captions])
    device = torch.device(settings.device)
    moments = encode_latent_moments(vae.to(device), images.to(device))
    text_table = text_table.to(device)
    sf = vae.config.scaling_factor
    if settings.unet_resume:  # the saved EMA weights; the latent space must be the same
        unet = UNet2DConditionModel.from_pretrained(out_dir, subfolder="unet",
                                                    dtype=torch.float32).train()
    else:
        unet = build_toy_unet(settings.seed).train()
    unet.to(device)
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    scheduler = DDPMScheduler(**SD_SCHEDULE, prediction_type="epsilon", clip_sample=False)
    opt = torch.optim.AdamW(unet.parameters(), lr=LR, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(settings.seed + (12 if settings.unet_resume else 2))
    for step, progress, bar in budgeted_steps(settings.unet_steps, settings.unet_minutes,
                                              "toy UNet"):
        for group in opt.param_groups:
            group["lr"] = LR * warmup_lr(step, 100) * (0.2 if progress > 0.85 else 1)
        batch = torch.randint(0, len(captions), (BATCH,), generator=gen)
        mean, std = moments[batch.to(device)].chunk(2, dim=1)
        latents = (mean + std * torch.randn(mean.shape, generator=gen).to(device)) * sf
        rows = caption_rows[batch].masked_fill(torch.rand(BATCH, generator=gen) < CAPTION_DROPOUT, 0)
        loss = diffusion_loss(unet, scheduler, latents, text_table[rows.to(device)], gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        decay = min(EMA_DECAY, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), unet.parameters(), strict=True):
                p_ema.lerp_(p, 1 - decay)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    save_pipeline(ema.cpu(), vae.cpu(), text_encoder, tokenizer, out_dir)
    return {"steps": step + 1, "batch": BATCH, "resumed": settings.unet_resume,
            "final_loss": loss.item(),
            "unet_params": sum(p.numel() for p in unet.parameters())}
