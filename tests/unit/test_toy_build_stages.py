"""Toy-world build stages: decoder-only VAE fine-tuning keeps the latent space."""

from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL

from orchestration.toy_build.common import BuildSettings
from orchestration.toy_build.vae_stage import freeze_encoder, train_vae, vae_loss


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 8),
                         down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1,
                         latent_channels=4, norm_num_groups=4, sample_size=8)


def test_decoder_only_step_moves_the_decoder_and_keeps_the_encoder():
    vae = tiny_vae().train()
    freeze_encoder(vae)
    encoder_before = {k: v.clone() for k, v in vae.encoder.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in vae.decoder.state_dict().items()}
    opt = torch.optim.SGD([p for p in vae.parameters() if p.requires_grad], lr=0.1)
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    vae_loss(vae, images).backward()
    assert all(p.grad is None for p in vae.encoder.parameters())
    opt.step()
    for name, weight in vae.encoder.state_dict().items():
        torch.testing.assert_close(weight, encoder_before[name])
    assert any(not torch.equal(w, decoder_before[k]) for k, w in vae.decoder.state_dict().items())


def test_decoder_only_without_resume_is_rejected(tmp_path: Path):
    settings = BuildSettings(data_dir=tmp_path, vae_decoder_only=True)
    with pytest.raises(ValueError, match="--vae-resume"):
        train_vae(settings, tmp_path / "vae")
