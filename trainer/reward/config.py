"""The reward part of the trainer's config tree: the reward term of eq. 11 and the latent
proxy RM (section 4.2, Algorithm 4). Re-exported by trainer/config.py, the tree's root; see
its module docstring for how reward.mode and reward.beta select the method.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rglcd.config_base import StrictModel
from rglcd.toy.paths import TOY_LRM


class RewardConfig(StrictModel):
    """The reward term of eq. 11; see the module docstring for how the modes differ."""

    model: str | None = Field(
        None,
        description="mode 'direct': name of a differentiable scorer in serve.scorers (e.g. "
        "'toy-clip'). Must be null in mode 'lrm' (the expert is lrm.expert) and when beta=0.",
    )
    beta: float = Field(
        0.0,
        ge=0,
        description="Reward scale; 0 = plain LCD. Paper Table 2: CLIPScore/PickScore 5, "
        "HPSv2.1/ImageReward 1. The toy default (configs/toy-rglcd-lrm-toy-judge.yaml) uses 3 for LRM cosine "
        "scores in [-1, 1] (the comparison that chose it: docs/results.md).",
    )
    mode: Literal["direct", "lrm"] = Field(
        "lrm",
        description="'direct': decode the online output and score it with reward.model, with "
        "gradient. 'lrm': score the latent with the latent proxy RM (no decode on the student "
        "path); the LRM learns from lrm.expert.",
    )
    decode_chunk_size: int | None = Field(
        None,
        ge=1,
        description="Decode this many latents at a time (direct: with gradient; lrm: for the "
        "expert). None = the whole batch at once.",
    )

    timestep_window: tuple[int, int] | None = Field(
        None,
        description="Departure from the paper, off by default: (low, high), inclusive. Only "
        "samples whose single-step generation starts at a timestep t_{n+k} in this range carry "
        "the reward term (the others weigh 0 in its batch mean); None = every sample (eq. 11).",
    )

    @property
    def enabled(self) -> bool:
        return self.beta > 0

    @model_validator(mode="after")
    def _window_in_order(self) -> RewardConfig:
        window = self.timestep_window
        if window is not None and not 0 <= window[0] <= window[1]:
            raise ValueError(
                f"reward.timestep_window={list(window)} must be [low, high] with "
                "0 <= low <= high (training timesteps, e.g. [0, 499]); or null for all"
            )
        return self


class LRMConfig(StrictModel):
    """Latent proxy reward model and its online finetuning (section 4.2, Algorithm 4)."""

    checkpoint: str = Field(
        TOY_LRM, description="Pretrained LRM folder: a path, s3:// / gs:// URI or pkg:// location."
    )
    expert: str = Field("toy-judge", description="Expert scorer in serve.scorers (any kind).")
    expert_vae: str | None = Field(
        None,
        description="VAE in serve.vaes that decodes the triplet latents for the expert; it "
        "must be the teacher's VAE. None = the only entry of serve.vaes.",
    )
    batch_size: int = Field(
        16, ge=1, description="Triplets per LRM update, taken from each worker's batch."
    )
    learning_rate: float = Field(
        3.3e-6,
        gt=0,
        description="Paper appendix A (after HPSv2), for 10k updates of a CLIP-H-sized LRM. "
        "The toy LRM recipes use 1e-4: a few hundred updates of a small LRM need a larger "
        "step, as lcd.learning_rate does; at 3.3e-6 it stays where it started.",
    )
    tau_l: float = Field(
        0.01,
        gt=0,
        description="LRM temperature of P (eq. 12). 0.01 = the reference code's 1/exp(logit "
        "scale) for a trained CLIP, for cosine-scale LRM scores.",
    )
    tau_e: float = Field(
        0.01,
        gt=0,
        description="Expert temperature of Q (eq. 12); match it to the expert's score scale. "
        "A small value turns Q into 'prefer the better one' (pairwise experts).",
    )
    max_staleness_steps: int = Field(
        4,
        ge=0,
        description="Expert scores arrive asynchronously; use a triplet for an LRM update at "
        "most this many student steps after it was made, then drop it (counted in "
        "reward_updates_skipped). At most this + 1 requests are in flight per worker (more "
        "when the adaptive window widens it: max_adaptive_staleness_steps). "
        "0 = wait for each step's scores in that step (synchronous).",
    )
    max_adaptive_staleness_steps: int = Field(
        32,
        ge=0,
        description="Upper bound of the adaptive window: when the measured expert round trip "
        "needs more than max_staleness_steps steps, the window widens to ceil(2 x round trip / "
        "step time) + 1 steps (moving averages, trainer/reward/expert_window.py), up to this. An "
        "expert whose round trip fits the fixed window twice over sees exactly the fixed "
        "window. <= max_staleness_steps = a fixed window; ignored when max_staleness_steps is "
        "0.",
    )
    request_timeout_s: float = Field(30.0, gt=0, description="Per expert-scoring request.")
    decode_on_worker: bool = Field(
        False,
        description="Each train worker decodes its triplet latents with the teacher's VAE and "
        "sends the images (as the paper decodes, on every training GPU), instead of one "
        "serve.vaes deployment decoding every worker's latents.",
    )
    step_seconds: float | None = Field(
        None, gt=0, description="Expected seconds per training step at the recipe's scale: with "
        "the expert's call_seconds (and its VAE's decode_seconds), the trainer warns before it "
        "starts when the reward service cannot answer a step's expert requests in a step. "
        "Unset: no such check.",
    )
    real_image_preference: bool = Field(
        False,
        description="In pairs with the real latent z0, use Q=[0.5, 0.5] when the expert prefers "
        "the generated one (reference flag smooth_gt_label).",
    )
    trainable_latent_blocks: int = Field(2, ge=0, description="Last blocks of the latent tower.")
    trainable_text_blocks: int = Field(
        5, ge=0, description="Last blocks of the text tower (more than it has = all of them)."
    )
