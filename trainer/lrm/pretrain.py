"""LRM contrastive pretraining as plain torch (paper appendix B; docs/method.md §3).

The Ray Train shell is ``orchestration/commands/pretrain_lrm.py``; everything here runs in a unit
test. Latents are ``vae.encode(x).latent_dist.sample() * scaling_factor``, exactly the z0 the
RG-LCD step draws (docs/method.md §1), so the LRM is pretrained on the distribution it
later scores; the sampling noise also acts as a mild augmentation. Captions are stored once
per distinct string (the toy world has a few hundred) and referenced by index.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from trainer.lrm.losses import attribute_accuracy, clip_contrastive_loss, retrieval_accuracy


@dataclass
class LatentCaptionData:
    """A split as tensors: latents (N, C, h, w), caption_index (N,) into captions / tokens."""

    latents: torch.Tensor
    caption_index: torch.Tensor
    captions: list[str]
    input_ids: torch.Tensor  # (K, L) tokens of the K distinct captions
    attention_mask: torch.Tensor  # (K, L)
    caption_emb: torch.Tensor | None = None  # (K, E), set by cache_caption_embeddings

    def __len__(self) -> int:
        return self.latents.shape[0]

    def shard(self, rank: int, world_size: int) -> LatentCaptionData:
        """Every `world_size`-th latent from `rank` (captions stay whole)."""
        keep = torch.arange(rank, len(self), world_size)
        return LatentCaptionData(
            self.latents[keep], self.caption_index[keep], self.captions,
            self.input_ids, self.attention_mask, self.caption_emb,
        )


@torch.no_grad()
def encode_images(
    vae,
    images: np.ndarray,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    sample: bool = True,
) -> torch.Tensor:
    """(N, H, W, 3) uint8 images -> (N, C, H/f, W/f) latents * scaling_factor.

    ``sample=True`` draws from the posterior (RG-LCD's z0); False takes its mean.
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, H, W, 3) uint8; got {images.shape} {images.dtype}.")
    scaling = vae.config.scaling_factor
    chunks = []
    for start in range(0, len(images), batch_size):
        pixels = torch.from_numpy(images[start : start + batch_size]).permute(0, 3, 1, 2)
        pixels = pixels.float() / 127.5 - 1.0  # [-1, 1]
        dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
        latents = dist.sample(generator=generator) if sample else dist.mean
        chunks.append((latents * scaling).float().cpu())
    return torch.cat(chunks)


def prepare_split(
    vae,
    tokenizer,
    images: np.ndarray,
    captions: list[str],
    seed: int = 0,
    sample: bool = True,
    caption_bank: list[str] | None = None,
) -> LatentCaptionData:
    """Encode `images` and index/tokenize their `captions` -> ``LatentCaptionData``.

    The caption rows are the distinct `captions`, or `caption_bank` (a superset, e.g. every
    caption of the toy grammar) to rank retrieval against more candidates.
    """
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions.")
    distinct = sorted(set(captions)) if caption_bank is None else list(dict.fromkeys(caption_bank))
    missing = set(captions) - set(distinct)
    if missing:
        raise ValueError(f"caption_bank lacks {len(missing)} captions, e.g. {sorted(missing)[0]!r}.")
    row = {caption: i for i, caption in enumerate(distinct)}
    tokens = tokenizer(distinct, padding="max_length", truncation=True, return_tensors="pt")
    generator = torch.Generator(device=vae.device).manual_seed(seed)
    return LatentCaptionData(
        latents=encode_images(vae, images, generator=generator, sample=sample),
        caption_index=torch.tensor([row[c] for c in captions]),
        captions=distinct,
        input_ids=tokens["input_ids"],
        attention_mask=tokens["attention_mask"],
    )


@torch.no_grad()
def cache_caption_embeddings(model, data: LatentCaptionData, batch_size: int = 512) -> None:
    """Embed every caption once; only valid while the text tower and projection are frozen."""
    if any(p.requires_grad for n, p in model.named_parameters() if n.startswith("text_")):
        raise ValueError("the text tower trains; caption embeddings cannot be cached.")
    device = next(model.parameters()).device
    data.caption_emb = torch.cat([
        model.embed_text(data.input_ids[i : i + batch_size].to(device),
                         data.attention_mask[i : i + batch_size].to(device))
        for i in range(0, len(data.captions), batch_size)
    ])


def cosine_lr(step: int, total_steps: int, base_lr: float, warmup_steps: int) -> float:
    """Linear warm-up then cosine decay to 10% of `base_lr`."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def contrastive_step(
    model, optimizer: torch.optim.Optimizer, data: LatentCaptionData, batch: torch.Tensor
) -> dict[str, float]:
    """One CLIP step on latents `batch` (indices into `data`); `model` may be DDP-wrapped.

    Only the batch's distinct captions go through the text tower, or none when
    ``data.caption_emb`` holds cached embeddings (locked text tower).
    """
    device = next(model.parameters()).device
    caption_rows, caption_index = data.caption_index[batch].unique(return_inverse=True)
    latents = data.latents[batch].to(device, torch.float32)  # shards keep float16
    if data.caption_emb is not None:
        latent_emb, _, scale = model(latents)
        caption_emb = data.caption_emb[caption_rows].to(device)
    else:
        latent_emb, caption_emb, scale = model(
            latents,
            data.input_ids[caption_rows].to(device),
            data.attention_mask[caption_rows].to(device),
        )
    loss = clip_contrastive_loss(latent_emb, caption_emb, caption_index.to(device), scale)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": loss.item(), "logit_scale_exp": scale.item()}


@torch.no_grad()
def evaluate_retrieval(
    model,
    data: LatentCaptionData,
    batch_size: int = 512,
    attributes: Callable[[str], dict[str, str]] | None = None,
) -> dict[str, float]:
    """Zero-shot caption ranking over the split's distinct captions: top-1 / top-5 accuracy;
    with `attributes` (caption -> {name: value}) also each attribute's accuracy among
    captions that differ in it only (``losses.attribute_accuracy``)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    latent_emb = torch.cat([
        model.embed_latents(data.latents[i : i + batch_size].to(device, torch.float32))
        for i in range(0, len(data), batch_size)
    ])
    caption_emb = model.embed_text(data.input_ids.to(device), data.attention_mask.to(device))
    index = data.caption_index.to(device)
    metrics = retrieval_accuracy(latent_emb, caption_emb, index)
    if attributes is not None:
        parsed = [attributes(caption) for caption in data.captions]
        metrics |= attribute_accuracy(latent_emb, caption_emb, index, parsed)
    model.train(was_training)
    return {**metrics, "num_latents": len(data), "num_captions": len(data.captions)}
