"""Stage "reward-clip": a mini CLIP with a fine-tuned image tower, a toy-clip (CLIPScore)
reward. Built only on request (not one of the default stages); the committed one
(`rglcd/toy/artifacts/miniclip-reward`, hard negatives with counterfactuals) is the expert of
configs/toy-rglcd-lrm-reward-clip.yaml.

Why: RG-LCD follows the reward's pixel gradient (paper eq. 10-11), and ascending the
stage-"clip" mini CLIP's gradient mixes colours into the object and roughens fills (the toy
judge's quality score falls). Two objectives, `reward_clip_objective`:

- "adversarial": half clean, half L2-PGD-attacked images (Madry et al., 2018), which gives
  small models input gradients that change what a picture shows rather than add noise
  (Santurkar et al., 2019).
- "hard-negatives": for its caption, each clean picture must outscore a degraded copy of
  itself (`degrade.py`: blotches, speckle, noise, blur), as web-trained CLIP scores a smudged
  picture lower on a caption that does not say "smudged"; with `reward_clip_counterfactuals`
  also the same scene with its shape, size or colour changed (`counterfactual.py`), so the
  score keeps its slope along what the caption names.

How each fares as a reward: docs/results.md. The text tower stays the mini CLIP's, frozen:
the reward reads prompts exactly as the teacher's text encoder does. Loss: image-to-text
cross-entropy over the distinct training captions (text embeddings fixed, so computed once),
plus the objective's term.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPTokenizer

from orchestration.toy_build.common import BuildSettings, budgeted_steps, load_split, warmup_lr
from orchestration.toy_build.counterfactual import ATTRIBUTES, counterfactuals
from orchestration.toy_build.degrade import degrade
from rglcd.toy.miniclip import (
    caption_ranking_accuracy,
    image_features,
    text_features,
    write_preprocess,
)
from rglcd.toy.scenes import all_captions

LR = 3e-4
EVAL_ATTACK_STEPS = 10
OBJECTIVES = ("adversarial", "hard-negatives")


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


def hard_negative_loss(model: CLIPModel, clean: torch.Tensor, negatives: list[torch.Tensor],
                       target: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """Caption cross-entropy of the clean images, plus, per caption, a cross-entropy over its
    clean picture and that picture's hard negatives (the text-to-image side of CLIP's loss,
    over pictures that differ from the true one in a single way).

    negatives[0] is the degraded copy; its caption cross-entropy also counts (weight 0.5), so
    a smudged red circle still reads as a red circle rather than anything at all.
    """
    clean_logits = caption_logits(model, clean, text_emb)
    own = [clean_logits.gather(1, target[:, None])[:, 0]]
    degraded_ce = clean_logits.new_zeros(())
    for k, images in enumerate(negatives):
        logits = caption_logits(model, images, text_emb)
        own.append(logits.gather(1, target[:, None])[:, 0])
        if k == 0:
            degraded_ce = F.cross_entropy(logits, target)
    rank = F.cross_entropy(torch.stack(own, dim=1), torch.zeros_like(target))
    return F.cross_entropy(clean_logits, target) + 0.5 * degraded_ce + rank


def _check(settings: BuildSettings) -> None:
    if settings.reward_clip_objective not in OBJECTIVES:
        raise ValueError(f"reward_clip_objective {settings.reward_clip_objective!r} is unknown; "
                         f"use one of {OBJECTIVES}")
    if settings.reward_clip_objective == "adversarial" and settings.reward_clip_eps <= 0:
        raise ValueError("reward_clip_eps must be > 0 (the L2 radius of the attack, in [0, 1] "
                         "pixel units over a 3x32x32 image; e.g. 0.25, see docs/reward-clip)")


def _batch_loss(settings: BuildSettings, model: CLIPModel, text_emb: torch.Tensor,
                images: torch.Tensor, captions: list[str], caption_index: torch.Tensor,
                gen: torch.Generator) -> Callable[[int], torch.Tensor]:
    """step -> the objective's loss on a fresh random batch of training images."""
    device = next(model.parameters()).device

    def loss_at(step: int) -> torch.Tensor:
        batch = torch.randint(0, len(captions), (settings.reward_clip_batch,), generator=gen)
        clean, target = images[batch].to(device), caption_index[batch].to(device)
        if settings.reward_clip_objective == "adversarial":
            def attack_loss(x: torch.Tensor) -> torch.Tensor:
                return F.cross_entropy(caption_logits(model, x, text_emb), target)

            attacked = pgd_l2(attack_loss, clean, settings.reward_clip_eps,
                              settings.reward_clip_attack_steps)
            return 0.5 * (attack_loss(clean) + attack_loss(attacked))
        negatives = [degrade(images[batch], gen)]
        if settings.reward_clip_counterfactuals:
            negatives += list(counterfactuals(images[batch], [captions[i] for i in batch],
                                              settings.seed * 100_003 + step))
        return hard_negative_loss(model, clean, [x.to(device) for x in negatives], target,
                                  text_emb)

    return loss_at


def train_reward_clip(settings: BuildSettings, source_dir: Path, out_dir: Path) -> dict:
    """Fine-tune the image tower of `source_dir`'s mini CLIP; save to `out_dir`."""
    _check(settings)
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
    loss_at = _batch_loss(settings, model, text_emb, images, captions, caption_index,
                          torch.Generator().manual_seed(settings.seed + 11))
    for step, progress, bar in budgeted_steps(settings.reward_clip_steps,
                                              settings.reward_clip_minutes, "reward CLIP"):
        for group in opt.param_groups:
            group["lr"] = LR * warmup_lr(step, 100) * (0.1 if progress > 0.8 else 1)
        loss = loss_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    _save(model, tokenizer, out_dir)  # before the evaluation: a failed report loses no training
    report = {"objective": settings.reward_clip_objective,
              "counterfactuals": settings.reward_clip_counterfactuals,
              "final_loss": loss.item(), "steps": step + 1, "batch": settings.reward_clip_batch,
              "device": str(device)}
    return report | _evaluate(settings, model, tokenizer, source_dir)


def _evaluate(settings: BuildSettings, model: CLIPModel, tokenizer: CLIPTokenizer,
              source_dir: Path) -> dict:
    """Held-out figures of the trained tower and, for comparison, of the source mini CLIP."""
    device = next(model.parameters()).device
    images, captions = load_split(settings, "heldout")
    images, captions = images[:1000].to(device), captions[:1000]
    source = CLIPModel.from_pretrained(source_dir, dtype=torch.float32).to(device).eval()
    report = {"heldout_caption_top1_of_448": caption_ranking_accuracy(
        model, tokenizer, images, captions, all_captions())}
    if settings.reward_clip_objective == "adversarial":
        eps = settings.reward_clip_eps
        report["attack"] = (f"L2 PGD, eps {eps}, {settings.reward_clip_attack_steps} steps "
                            f"(training), {EVAL_ATTACK_STEPS} steps (evaluation)")
        for name, clip in (("", model), ("source_", source)):
            report[f"{name}heldout_top1_under_attack"] = robust_accuracy(
                clip, tokenizer, images, captions, eps)
        return report
    negatives = held_out_negatives(images, captions, settings.seed)
    for name, clip in (("", model), ("source_", source)):
        fractions = true_over(clip, tokenizer, images, negatives, captions)
        report.update({f"{name}heldout_true_over_{k}": v for k, v in fractions.items()})
    return report


def held_out_negatives(images: torch.Tensor, captions: list[str], seed: int
                       ) -> dict[str, torch.Tensor]:
    """The evaluation's hard negatives of each held-out image, by kind."""
    swaps = counterfactuals(images, captions, seed + 29).to(images.device)
    degraded = degrade(images, torch.Generator().manual_seed(seed + 23)).to(images.device)
    return {"degraded": degraded, **{f"{a}_swap": x for a, x in zip(ATTRIBUTES, swaps,
                                                                     strict=True)}}


def true_over(model: CLIPModel, tokenizer: CLIPTokenizer, images: torch.Tensor,
              negatives: dict[str, torch.Tensor], captions: list[str]) -> dict[str, float]:
    """Per kind of negative: the fraction of images scoring higher on their caption than
    their negative does (ties are not wins)."""
    with torch.no_grad():
        text = text_features(model, tokenizer, captions)
        true_score = (image_features(model, images) * text).sum(1)
        return {kind: (true_score > (image_features(model, x) * text).sum(1)).float().mean().item()
                for kind, x in negatives.items()}


def _save(model: CLIPModel, tokenizer: CLIPTokenizer, out_dir: Path) -> None:
    """fp16 safetensors + tokenizer + preprocess.json; `model` itself stays float32."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    state = {k: v.detach().cpu().half() for k, v in model.state_dict().items()}
    model.save_pretrained(out_dir, state_dict=state, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    write_preprocess(out_dir)
