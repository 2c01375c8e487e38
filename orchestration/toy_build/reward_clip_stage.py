"""Stage "reward-clip": a mini CLIP with an adversarially trained image tower, a candidate
toy-clip (CLIPScore) reward. Built only on request; nothing uses it by default.

Why it was tried: RG-LCD follows the reward's pixel gradient (paper eq. 10-11), and ascending
the stage-"clip" mini CLIP's gradient roughens flat fills and edges (the toy judge's quality
score falls). Adversarial training with an L2 PGD attack (Madry et al., 2018) gives small
models input gradients that change what a picture shows rather than add noise (Santurkar et
al., 2019), as CLIP ViT-H's are. Measured outcome (docs/reward-clip): the towers are far more
robust, but direct guidance with them costs judge quality as much or sooner, so the
committed toy-clip reward stays the mini CLIP. The text tower stays the mini CLIP's, frozen:
the reward reads prompts exactly as the teacher's text encoder does.

Loss: half clean, half adversarial image-to-text cross-entropy over the distinct training
captions (text embeddings fixed, so they are computed once).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPTokenizer

from orchestration.toy_build.common import BuildSettings, budgeted_steps, load_split, warmup_lr
from rglcd.toy.miniclip import (
    caption_ranking_accuracy,
    image_features,
    text_features,
    write_preprocess,
)
from rglcd.toy.scenes import all_captions

LR = 3e-4
EVAL_ATTACK_STEPS = 10


def pgd_l2(loss_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, eps: float,
           steps: int) -> torch.Tensor:
    """Images in [0, 1] moved within an L2 ball of radius `eps` (per image) to raise loss_fn.

    Normalised gradient steps of 2.5 eps / steps, projected back onto the ball and [0, 1]
    (Madry et al., 2018). Returns a detached tensor; model parameters get no gradient.
    """
    step_size = 2.5 * eps / steps
    delta = torch.zeros_like(images)
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn((images + delta).clamp(0, 1)), delta)
        grad = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = delta.detach() + step_size * grad
        norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = delta * (eps / norm).clamp(max=1.0)
    return (images + delta).clamp(0, 1).detach()


def caption_logits(model: CLIPModel, images: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """(N, K) scaled cosines of images in [0, 1] against K fixed caption embeddings."""
    return model.logit_scale.exp().clamp(max=100) * image_features(model, images) @ text_emb.T


def robust_accuracy(model: CLIPModel, tokenizer: CLIPTokenizer, images: torch.Tensor,
                    captions: list[str], eps: float) -> float:
    """Top-1 caption accuracy among all 448 captions under a 10-step L2 PGD attack of `eps`."""
    candidates = all_captions()
    with torch.no_grad():
        text_emb = text_features(model, tokenizer, candidates)
    index = {c: i for i, c in enumerate(candidates)}
    truth = torch.tensor([index[c] for c in captions], device=images.device)
    adversarial = pgd_l2(lambda x: F.cross_entropy(caption_logits(model, x, text_emb), truth),
                         images, eps, EVAL_ATTACK_STEPS)
    with torch.no_grad():
        best = caption_logits(model, adversarial, text_emb).argmax(dim=1)
    return (best == truth).float().mean().item()


def _start_model(source_dir: Path, device: torch.device) -> tuple[CLIPModel, CLIPTokenizer]:
    """The stage-"clip" mini CLIP, text tower frozen, image tower trainable."""
    model = CLIPModel.from_pretrained(source_dir, dtype=torch.float32).to(device)
    model.requires_grad_(False)
    model.vision_model.requires_grad_(True)
    model.visual_projection.requires_grad_(True)
    return model.train(), CLIPTokenizer.from_pretrained(source_dir)


def train_reward_clip(settings: BuildSettings, source_dir: Path, out_dir: Path) -> dict:
    """Adversarially fine-tune the image tower of `source_dir`'s mini CLIP; save to `out_dir`."""
    if settings.reward_clip_eps <= 0:
        raise ValueError("reward_clip_eps must be > 0 (the L2 radius of the attack, in [0, 1] "
                         "pixel units over a 3x32x32 image; e.g. 0.25, see docs/reward-clip)")
    device = torch.device(settings.device)
    images, captions = load_split(settings, "train")
    model, tokenizer = _start_model(source_dir, device)
    vocab = sorted(set(captions))
    index = {c: i for i, c in enumerate(vocab)}
    caption_index = torch.tensor([index[c] for c in captions])
    with torch.no_grad():
        text_emb = text_features(model, tokenizer, vocab)  # (384, D), fixed
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=LR, weight_decay=0.1)
    gen = torch.Generator().manual_seed(settings.seed + 11)
    eps, attack_steps = settings.reward_clip_eps, settings.reward_clip_attack_steps
    for step, progress, bar in budgeted_steps(settings.reward_clip_steps,
                                              settings.reward_clip_minutes, "reward CLIP"):
        for group in opt.param_groups:
            group["lr"] = LR * warmup_lr(step, 100) * (0.1 if progress > 0.8 else 1)
        batch = torch.randint(0, len(captions), (settings.reward_clip_batch,), generator=gen)
        clean, target = images[batch].to(device), caption_index[batch].to(device)

        def attack_loss(x: torch.Tensor, target: torch.Tensor = target) -> torch.Tensor:
            return F.cross_entropy(caption_logits(model, x, text_emb), target)

        adversarial = pgd_l2(attack_loss, clean, eps, attack_steps)
        loss = 0.5 * (attack_loss(clean) + attack_loss(adversarial))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    _save(model, tokenizer, out_dir)  # before the evaluation: a failed report loses no training
    held_images, held_captions = load_split(settings, "heldout")
    held_images, held_captions = held_images[:1000].to(device), held_captions[:1000]
    report = {
        "heldout_caption_top1_of_448": caption_ranking_accuracy(
            model, tokenizer, held_images, held_captions, all_captions()),
        "heldout_top1_under_attack": robust_accuracy(
            model, tokenizer, held_images, held_captions, eps),
        "attack": f"L2 PGD, eps {eps}, {attack_steps} steps (training), "
                  f"{EVAL_ATTACK_STEPS} steps (evaluation)",
        "final_loss": loss.item(), "steps": step + 1, "batch": settings.reward_clip_batch,
        "device": str(device),
    }
    source = CLIPModel.from_pretrained(source_dir, dtype=torch.float32)
    report["source_heldout_top1_under_attack"] = robust_accuracy(
        source.to(device).eval(), tokenizer, held_images, held_captions, eps)
    return report


def _save(model: CLIPModel, tokenizer: CLIPTokenizer, out_dir: Path) -> None:
    """fp16 safetensors + tokenizer + preprocess.json; `model` itself stays float32."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    state = {k: v.detach().cpu().half() for k, v in model.state_dict().items()}
    model.save_pretrained(out_dir, state_dict=state, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    write_preprocess(out_dir)
