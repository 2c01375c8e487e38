"""Stage "clip": train the miniature CLIP contrastively on toy scenes and save it.

The toy data have only 384 distinct training captions, so a batch of 256 holds many
duplicates; a plain CLIP loss would push apart an image and its own caption's twin. The loss
here contrasts each image with the *distinct* captions of the batch (cross-entropy), and each
distinct caption with all images, the matching ones sharing the target mass (soft labels).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPTokenizer

from orchestration.toy_build.common import BuildSettings, budgeted_steps, load_split, warmup_lr
from rglcd.hf_compat import projected_features
from rglcd.toy.miniclip import (
    build_miniclip,
    caption_ranking_accuracy,
    image_features,
    write_caption_tokenizer,
    write_preprocess,
)
from rglcd.toy.scenes import all_captions

BATCH = 128
LR = 1e-3


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, caption_ids: torch.Tensor,
                     logit_scale: torch.Tensor) -> torch.Tensor:
    """Duplicate-aware CLIP loss. image_emb (B, D), text_emb (U, D) for distinct captions,
    caption_ids (B,) index into the U distinct captions."""
    logits = logit_scale.exp().clamp(max=100) * image_emb @ text_emb.T  # (B, U)
    image_to_text = F.cross_entropy(logits, caption_ids)
    match = F.one_hot(caption_ids, text_emb.shape[0]).T.float()  # (U, B)
    text_to_image = -(F.log_softmax(logits.T, dim=1) * match / match.sum(1, keepdim=True))
    return 0.5 * (image_to_text + text_to_image.sum(1).mean())


def _start_model(settings: BuildSettings, out_dir: Path) -> tuple[CLIPModel, CLIPTokenizer]:
    """A fresh model, or with ``clip_resume`` the saved one with its text tower frozen.

    Resuming trains only the image tower (and logit scale): the text tower is also the toy
    teacher's text encoder, so once a teacher is built on it, it must not change.
    """
    if settings.clip_resume:
        model = CLIPModel.from_pretrained(out_dir, dtype=torch.float32)
        model.text_model.requires_grad_(False)
        model.text_projection.requires_grad_(False)
        return model.train(), CLIPTokenizer.from_pretrained(out_dir)
    tokenizer = write_caption_tokenizer(out_dir.parent / (out_dir.name + ".tokenizer"))
    return build_miniclip(len(tokenizer), settings.seed).train(), tokenizer


def train_miniclip(settings: BuildSettings, out_dir: Path) -> dict:
    """Train, save to `out_dir` (fp16 safetensors + tokenizer + preprocess.json), report."""
    images, captions = load_split(settings, "train")
    model, tokenizer = _start_model(settings, out_dir)
    device = torch.device(settings.device)
    model.to(device)
    vocab = sorted(set(captions))
    index = {c: i for i, c in enumerate(vocab)}
    all_ids = tokenizer(vocab, padding="max_length", max_length=tokenizer.model_max_length,
                        return_tensors="pt").input_ids.to(device)  # (384, 77)
    # The text tower is causal and pools at the end token, so padding after it changes
    # nothing: train on the shortest prefix that holds every caption's end token.
    all_ids = all_ids[:, : int((all_ids != tokenizer.pad_token_id).sum(1).max()) + 1]
    caption_index = torch.tensor([index[c] for c in captions])
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=LR, weight_decay=0.1)
    gen = torch.Generator().manual_seed(settings.seed + (7 if settings.clip_resume else 0))
    for step, progress, bar in budgeted_steps(settings.clip_steps, settings.clip_minutes,
                                              "mini CLIP"):
        for group in opt.param_groups:
            group["lr"] = LR * warmup_lr(step, 100) * (0.1 if progress > 0.8 else 1)
        batch = torch.randint(0, len(captions), (BATCH,), generator=gen)
        distinct, local = caption_index[batch].unique(return_inverse=True)
        image_emb = image_features(model, images[batch].to(device))
        text_emb = F.normalize(projected_features(model.get_text_features(
            input_ids=all_ids[distinct.to(device)])), dim=-1)
        loss = contrastive_loss(image_emb, text_emb, local.to(device), model.logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.cpu().eval()
    held_images, held_captions = load_split(settings, "heldout")
    accuracy = caption_ranking_accuracy(model, tokenizer, held_images[:1000],
                                        held_captions[:1000], all_captions())
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.half().save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    write_preprocess(out_dir)
    shutil.rmtree(out_dir.parent / (out_dir.name + ".tokenizer"), ignore_errors=True)
    return {"heldout_caption_top1_of_448": accuracy, "final_loss": loss.item(),
            "steps": step + 1, "resumed_image_tower_only": settings.clip_resume}
