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


def test_pgd_l2_stays_in_the_ball_and_in_range_and_raises_the_loss():
    from orchestration.toy_build.reward_clip_stage import pgd_l2

    torch.manual_seed(0)
    net = torch.nn.Linear(3 * 8 * 8, 5)
    target = torch.tensor([0, 1, 2, 3])
    images = torch.rand(4, 3, 8, 8)

    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(net(x.flatten(1)), target)

    adversarial = pgd_l2(loss_fn, images, eps=0.5, steps=5)
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert ((adversarial - images).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all()
    assert loss_fn(adversarial) > loss_fn(images)
    assert not adversarial.requires_grad
    assert all(p.grad is None for p in net.parameters())  # the attack trains nothing


def test_reward_clip_stage_refuses_a_zero_radius(tmp_path: Path):
    from orchestration.toy_build.reward_clip_stage import train_reward_clip

    settings = BuildSettings(data_dir=tmp_path, reward_clip_eps=0.0)
    with pytest.raises(ValueError, match="reward_clip_eps"):
        train_reward_clip(settings, tmp_path / "clip", tmp_path / "out")


def test_reward_clip_stage_refuses_an_unknown_objective(tmp_path: Path):
    from orchestration.toy_build.reward_clip_stage import train_reward_clip

    settings = BuildSettings(data_dir=tmp_path, reward_clip_objective="robust")
    with pytest.raises(ValueError, match="hard-negatives"):
        train_reward_clip(settings, tmp_path / "clip", tmp_path / "out")


def test_hard_negative_loss_ranks_clean_against_degraded():
    import math

    import torch.nn.functional as F

    from orchestration.toy_build.reward_clip_stage import caption_logits, hard_negative_loss
    from rglcd.toy.miniclip import build_miniclip

    model = build_miniclip(vocab_size=300).eval()
    torch.manual_seed(0)
    text_emb = F.normalize(torch.randn(5, 64), dim=-1)
    images, target = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    caption_ce = F.cross_entropy(caption_logits(model, images, text_emb), target)
    # A copy identical to the clean image ties it: the ranking term is then log 2.
    torch.testing.assert_close(hard_negative_loss(model, images, [images], target, text_emb),
                               1.5 * caption_ce + math.log(2))
    degraded = images.flip(-1)
    loss = hard_negative_loss(model, images, [degraded], target, text_emb)
    assert torch.isfinite(loss) and not torch.isclose(loss, 1.5 * caption_ce + math.log(2))
