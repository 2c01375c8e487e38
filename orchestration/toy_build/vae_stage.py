"""Stage "vae": train the toy AutoencoderKL (32x32x3 <-> 4x8x8) and measure its scaling factor.

Recipe from docs/method.md §8: blocks (32, 64, 64), one layer each, 4 latent channels,
object pixels weighted x5 in an L1 + L2 loss (plain losses blur small crosses and squares into
blobs), a small KL term as in SD's VAE. ``scaling_factor = 1 / std(latents)``
is written into the config, as SD's 0.18215 was measured for its VAE. Trained in float32:
bf16 autocast is slow on CPUs without native bf16 instructions.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from orchestration.toy_build.common import BuildSettings, budgeted_steps, load_split, warmup_lr
from rglcd.toy.judge import ToyJudge

BATCH = 32
LR = 2e-3
OBJECT_WEIGHT = 5.0
KL_WEIGHT = 1e-6


def build_toy_vae(seed: int) -> AutoencoderKL:
    """KL autoencoder with 4x downsampling: (B, 3, 32, 32) <-> (B, 4, 8, 8).

    Blocks (32, 64, 64) as in docs/method.md §8: a narrower (16, 32, 64) VAE is faster but its
    reconstructions lose small shapes. The decoder can be fine-tuned
    later with the encoder frozen (``--vae-resume --vae-decoder-only``), which keeps the
    latent space of the UNet and LRM.
    """
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=32,
    )


def object_weights(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 1, H, W): OBJECT_WEIGHT where a pixel differs from the
    top-left (always background) pixel, else 1."""
    is_object = (images - images[..., :1, :1]).abs().amax(dim=1, keepdim=True) > 1e-3
    return 1.0 + (OBJECT_WEIGHT - 1.0) * is_object.float()


def vae_loss(vae: AutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    """Object-weighted L1 + L2 reconstruction loss + KL_WEIGHT * KL, images in [0, 1]."""
    x = images * 2 - 1
    with torch.set_grad_enabled(vae.encoder.training):  # no encoder graph when it is frozen
        posterior = vae.encode(x).latent_dist
    recon = vae.decode(posterior.sample()).sample
    error = recon - x
    weights = object_weights(images)
    recon_loss = (weights * (error.abs() + error.square())).mean()
    return recon_loss + KL_WEIGHT * posterior.kl().mean()


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> [0, 1] reconstructions through the posterior mean."""
    latents = vae.encode(images * 2 - 1).latent_dist.mean
    return (vae.decode(latents).sample / 2 + 0.5).clamp(0, 1)


@torch.no_grad()
def measure_scaling_factor(vae: AutoencoderKL, images: torch.Tensor) -> float:
    """1 / std of sampled latents of `images` (how SD's 0.18215 was obtained)."""
    latents = torch.cat([vae.encode(images[i : i + 256] * 2 - 1).latent_dist.sample()
                         for i in range(0, len(images), 256)])
    return float(1.0 / latents.std())


def reconstruction_report(vae: AutoencoderKL, images: torch.Tensor, captions: list[str]) -> dict:
    recon = torch.cat([reconstruct(vae, images[i : i + 250]) for i in range(0, len(images), 250)])
    mse = (recon - images).square().mean(dim=(1, 2, 3))
    psnr = (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean().item()
    summary = ToyJudge().summary(recon, captions)
    return {"psnr_db": round(psnr, 2), "judge_on_reconstructions": summary}


def freeze_encoder(vae: AutoencoderKL) -> None:
    """Decoder-only fine-tuning (as SD's ft-MSE VAE): the encoder, quant_conv and hence the
    latent space and scaling factor stay fixed, so a UNet trained on them stays valid."""
    for module in (vae.encoder, vae.quant_conv):
        module.eval().requires_grad_(False)


def train_vae(settings: BuildSettings, out_dir: Path) -> dict:
    """Train, set the measured scaling factor, save (fp32) to `out_dir`, report."""
    if settings.vae_decoder_only and not settings.vae_resume:
        raise ValueError("--vae-decoder-only fine-tunes a saved VAE; pass --vae-resume too")
    images, _ = load_split(settings, "train")
    if settings.vae_resume:
        vae = AutoencoderKL.from_pretrained(out_dir, dtype=torch.float32).train()
    else:
        vae = build_toy_vae(settings.seed).train()
    if settings.vae_decoder_only:
        freeze_encoder(vae)
    trainable = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=LR, weight_decay=0.0)
    gen = torch.Generator().manual_seed(settings.seed + (11 if settings.vae_resume else 1))
    for step, progress, bar in budgeted_steps(settings.vae_steps, settings.vae_minutes, "toy VAE"):
        for group in opt.param_groups:
            group["lr"] = LR * warmup_lr(step, 100) * (0.1 if progress > 0.8 else 1)
        batch = images[torch.randint(0, len(images), (BATCH,), generator=gen)]
        loss = vae_loss(vae, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    vae.eval()
    scaling_factor = vae.config.scaling_factor
    if not settings.vae_decoder_only:
        scaling_factor = measure_scaling_factor(vae, images[:2048])
        vae.register_to_config(scaling_factor=scaling_factor)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    vae.save_pretrained(out_dir, safe_serialization=True)
    val_images, val_captions = load_split(settings, "validation")
    report = reconstruction_report(vae, val_images[:500], val_captions[:500])
    return {"steps": step + 1, "batch": BATCH, "resumed": settings.vae_resume,
            "decoder_only": settings.vae_decoder_only,
            "final_loss": loss.item(), "scaling_factor": scaling_factor,
            "params": sum(p.numel() for p in vae.parameters()), **report}
