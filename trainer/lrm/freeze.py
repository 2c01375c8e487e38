"""Which LRM parameters train (paper appendix B: "last 2 layers of the latent encoder and the
last 5 layers of the text encoder"; docs/method.md §3).

Every parameter belongs to one named group::

    latent_stem (patch embedding, class token, pre-norm)  latent_block.<i>  latent_norm
    latent_projection  text_embeddings  text_block.<i>  text_norm  text_projection  logit_scale

``set_trainable(model, groups)`` turns ``requires_grad`` on for exactly those groups and off for
all others; ``build_optimizer`` then holds only the trainable tensors. The reference code calls
``requires_grad_(True)`` on the whole LRM afterwards and so trains everything; here a frozen
tensor is never in the optimizer, so even a later flag flip cannot move it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

_PREFIX_GROUPS = (
    ("latent_tower.patch_embed.", "latent_stem"),
    ("latent_tower.class_token", "latent_stem"),
    ("latent_tower.norm_pre.", "latent_stem"),
    ("latent_tower.norm.", "latent_norm"),
    ("latent_projection.", "latent_projection"),
    ("text_model.embeddings.", "text_embeddings"),
    ("text_model.final_layer_norm.", "text_norm"),
    ("text_projection.", "text_projection"),
    ("logit_scale", "logit_scale"),
)
_BLOCK_PREFIXES = (
    ("latent_tower.blocks.", "latent_block"),
    ("text_model.encoder.layers.", "text_block"),
)
HEAD_GROUPS = ("latent_norm", "latent_projection", "text_norm", "text_projection")


def parameter_group(name: str) -> str:
    """The group of an LRM parameter name, e.g. 'text_model.encoder.layers.3.mlp.fc1.weight'
    -> 'text_block.3'."""
    for prefix, group in _BLOCK_PREFIXES:
        if name.startswith(prefix):
            return f"{group}.{name[len(prefix):].split('.')[0]}"
    for prefix, group in _PREFIX_GROUPS:
        if name.startswith(prefix):
            return group
    raise AssertionError(f"LRM parameter {name!r} belongs to no group")


def num_blocks(model: nn.Module) -> tuple[int, int]:
    """(latent tower blocks, text tower blocks) of an LRM."""
    return len(model.latent_tower.blocks), len(model.text_model.encoder.layers)


def _last_blocks(kind: str, count: int, available: int) -> list[str]:
    if count < 0:
        raise ValueError(f"{kind} count={count} must be >= 0 (0 freezes all {kind}s).")
    count = min(count, available)  # the paper's "last 5 text blocks", clamped to the model
    return [f"{kind}.{i}" for i in range(available - count, available)]


def finetune_groups(
    model: nn.Module, latent_blocks: int = 2, text_blocks: int = 5, include_logit_scale=False
) -> set[str]:
    """Online finetuning (Algorithm 4): last blocks of each tower + final norms and projections.

    Counts larger than the tower are clamped. ``logit_scale`` stays frozen: the reward is the
    plain cosine and eq. 12 uses the fixed tau_L, so it would receive no gradient
    (``include_logit_scale=True`` adds it anyway, e.g. for a loss on ``logits``).
    """
    n_latent, n_text = num_blocks(model)
    groups = set(HEAD_GROUPS) | ({"logit_scale"} if include_logit_scale else set())
    groups.update(_last_blocks("latent_block", latent_blocks, n_latent))
    groups.update(_last_blocks("text_block", text_blocks, n_text))
    return groups


def pretrain_groups(model: nn.Module, text_blocks: int = 0) -> set[str]:
    """Contrastive pretraining (paper appendix B): the whole latent tower learns from scratch;
    the pretrained text tower stays locked unless its last `text_blocks` are tuned lightly."""
    n_latent, n_text = num_blocks(model)
    groups = {"latent_stem", "latent_norm", "latent_projection", "logit_scale"}
    groups.update(_last_blocks("latent_block", n_latent, n_latent))
    if text_blocks > 0:
        groups.update(_last_blocks("text_block", text_blocks, n_text))
        groups.update({"text_norm", "text_projection"})
    return groups


def set_trainable(model: nn.Module, groups: Iterable[str]) -> list[str]:
    """requires_grad on for parameters in `groups`, off for all others; returns trainable names."""
    groups = set(groups)
    known = {parameter_group(name) for name, _ in model.named_parameters()}
    unknown = groups - known
    if unknown:
        raise ValueError(f"unknown LRM parameter groups {sorted(unknown)}; known: {sorted(known)}.")
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(parameter_group(name) in groups)
        if param.requires_grad:
            trainable.append(name)
    return trainable


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999)
) -> torch.optim.AdamW:
    """AdamW over the currently trainable parameters only (call after ``set_trainable``)."""
    params = trainable_parameters(model)
    if not params:
        raise ValueError("no trainable LRM parameters; call set_trainable(model, groups) first.")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas)
