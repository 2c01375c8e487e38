"""Latent proxy reward model (paper section 4.2, Algorithm 4; docs/method.md §3).

Public API::

    LatentRewardModel.from_clip_dir(clip_dir, latent=LatentTowerConfig(...))  # new LRM
    LatentRewardModel.from_pretrained(dir) / .save_pretrained(dir, dtype=torch.float16)
    lrm.reward(latents, prompts=[...] | input_ids=...)  -> (N,) cosine; P = softmax(cos / tau_l)
    lrm.detached_reward(pred, input_ids=...)             -> student term, no grad to the LRM
    set_trainable(lrm, finetune_groups(lrm, latent_blocks=2, text_blocks=5))  # before the optimizer
    build_optimizer(lrm, lr=3.3e-6)
    kl_preference_loss(r_L (N,3), r_E (N,3), tau_l, tau_e, item_mask, real_image_preference)
    preference_agreement(r_L, r_E, item_mask)
"""

from trainer.lrm.freeze import (
    build_optimizer,
    finetune_groups,
    parameter_group,
    pretrain_groups,
    set_trainable,
    trainable_parameters,
)
from trainer.lrm.losses import (
    PAIRS,
    attribute_accuracy,
    clip_contrastive_loss,
    kl_preference_loss,
    preference_agreement,
    retrieval_accuracy,
)
from trainer.lrm.model import LatentRewardModel, LatentTowerConfig, LRMArchitecture

__all__ = [
    "PAIRS",
    "LRMArchitecture",
    "LatentRewardModel",
    "LatentTowerConfig",
    "attribute_accuracy",
    "build_optimizer",
    "clip_contrastive_loss",
    "finetune_groups",
    "kl_preference_loss",
    "parameter_group",
    "preference_agreement",
    "pretrain_groups",
    "retrieval_accuracy",
    "set_trainable",
    "trainable_parameters",
]
