"""One training step of a recipe, built from the trainer's own stage functions, measured.

The stages are those of `trainer/task.py` and `trainer/loop.py` (Algorithm 3 with the
reward term of eq. 11, Algorithm 4's LRM update): text conditioning (no grad), the student
with gradient (`consistency_function`), the guided teacher's DDIM step and the target (no
grad), the LCD distance, the reward (LRM: `detached_reward` of the online output; direct:
VAE decode with gradient + a CLIP-family scorer), backward, gradients dropped as
`zero_grad(set_to_none=True)` does, then the LRM's own update on `lrm.batch_size` triplets.
The task itself needs real tensors (per-sample generators, `.item()` metrics), so the plan
runs this replica; `orchestration/bench/real_step.py` checks it against the real task.

`measure_step` runs it under `LiveBytes` and torch's `FlopCounterMode`: under
FakeTensorMode it costs no memory, so it measures an SDXL step at 1024 px on a laptop.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils.flop_counter import FlopCounterMode

from orchestration.capacity.architectures import ModelParts, default_dtype
from orchestration.capacity.tracking import LiveBytes
from trainer.config import RGLCDConfig
from trainer.lcd import (
    AdaptersDisabled,
    add_lora_adapters,
    build_student_unet,
    consistency_function,
    distance_loss,
    guided_teacher_step,
)
from trainer.lcd.guidance import guidance_scale_embedding
from trainer.lrm.freeze import finetune_groups, set_trainable

TOKENS = 77  # CLIP's context length
EXPERT_SIDE = 224  # the CLIP-family scorers' input side


@dataclass
class StepModels:
    """What a train worker holds: student (+ EMA target), teacher, text encoders, VAE, rewards."""

    student: nn.Module
    target: nn.Module | None  # None: LCM-LoRA (the student itself under no_grad)
    teacher_unet: nn.Module
    parts: ModelParts

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.student.parameters() if p.requires_grad]

    def weights(self) -> list[torch.Tensor]:
        """Every parameter and buffer the worker holds (counted by the plan, not the step)."""
        parts = self.parts
        modules = [self.student, self.target, parts.unet, parts.vae, *parts.text_encoders,
                   parts.lrm, parts.expert]
        return [t for m in modules if m is not None for t in [*m.parameters(), *m.buffers()]]

    def lrm_trainable(self) -> list[nn.Parameter]:
        lrm = self.parts.lrm
        return [] if lrm is None else [p for p in lrm.parameters() if p.requires_grad]


def worker_models(
    parts: ModelParts, cfg: RGLCDConfig, student_dtype: torch.dtype = torch.float32
) -> StepModels:
    """Student/target as `trainer.task.build_student_and_target` makes them (the student's
    master weights in `student_dtype`, float32 in the trainer; the target in the frozen
    parts' dtype), LRM frozen as the hook freezes it, gradient checkpointing as
    `trainer.loop.build_task` enables it."""
    lora = cfg.model.lora
    if lora is not None:
        with _fake_moves_in_place():
            student = add_lora_adapters(parts.unet, lora.rank, lora.alpha, lora.target_modules)
        target = None
        teacher_unet = AdaptersDisabled(student)
    else:
        dim, frozen = cfg.model.time_cond_proj_dim, parts.unet.dtype
        with default_dtype(student_dtype):
            student = build_student_unet(parts.unet, dim, dtype=student_dtype)
        # the EMA target: a second copy (copy.deepcopy would leave the fake-tensor mode)
        with default_dtype(frozen):
            target = build_student_unet(parts.unet, dim, dtype=frozen).requires_grad_(False)
        target.eval()
        teacher_unet = parts.unet
    if cfg.model.gradient_checkpointing:
        student.enable_gradient_checkpointing()
        parts.vae.enable_gradient_checkpointing()
    if parts.lrm is not None:
        groups = finetune_groups(
            parts.lrm, cfg.lrm.trainable_latent_blocks, cfg.lrm.trainable_text_blocks
        )
        set_trainable(parts.lrm, groups)
    return StepModels(student, target, teacher_unet, parts)


@contextmanager
def _fake_moves_in_place() -> Iterator[None]:
    """peft moves each new adapter to its layer's device and dtype with `.to()`; on fake
    tensors torch swaps the parameter for the moved one, which fake tensors refuse. A move
    that changes nothing keeps the parameter; any other still swaps (and fails loudly)."""
    swap = torch.utils.swap_tensors

    def keep_if_unchanged(first, second, *args):
        same = (first.dtype, first.device, first.shape) == (second.dtype, second.device,
                                                             second.shape)
        if not (same and isinstance(first, FakeTensor)):
            swap(first, second, *args)

    torch.utils.swap_tensors = keep_if_unchanged
    try:
        yield
    finally:
        torch.utils.swap_tensors = swap


@dataclass
class StepMeasurement:
    """Bytes and FLOPs of one step at one per-worker batch size."""

    batch: int
    peak_bytes: int  # tensors made during the step, at their peak (weights/optimizer excluded)
    grad_bytes_at_peak: int  # of which: the trainable parameters' gradients
    flops: int
    student_peak_bytes: int  # the peak before the LRM update (the part that grows with batch)


def _conditioning(encoders: list, ids: torch.Tensor, batch: int, image_side: int):
    """(hidden states, SDXL added_cond_kwargs or None), as trainer/conditioning.py builds them."""
    if len(encoders) == 1:
        return encoders[0](ids)[0], None
    hidden, pooled = [], None
    for encoder in encoders:
        out = encoder(ids, output_hidden_states=True)
        if out[0].ndim == 2:
            pooled = out[0]
        hidden.append(out.hidden_states[-2])
    time_ids = torch.tensor([image_side, image_side, 0, 0, image_side, image_side])
    return torch.cat(hidden, dim=-1), {"text_embeds": pooled, "time_ids": time_ids.repeat(batch, 1)}


def _reward(models: StepModels, cfg: RGLCDConfig, online: torch.Tensor, ids: torch.Tensor):
    parts = models.parts
    if cfg.uses_lrm:
        return parts.lrm.detached_reward(online, input_ids=ids, attention_mask=torch.ones_like(ids))
    chunk = cfg.reward.decode_chunk_size or online.shape[0]
    scaled = online / parts.vae.config.scaling_factor
    images = torch.cat([parts.vae.decode(part).sample for part in scaled.split(chunk)])
    images = (images.float() / 2 + 0.5).clamp(0, 1)
    pixels = F.interpolate(images, size=(EXPERT_SIDE, EXPERT_SIDE), mode="bicubic")
    image_emb = parts.expert.get_image_features(pixel_values=pixels)
    text_emb = parts.expert.get_text_features(input_ids=ids)
    return F.cosine_similarity(_pooled(image_emb), _pooled(text_emb), dim=-1)


def _pooled(features) -> torch.Tensor:
    return features if isinstance(features, torch.Tensor) else features.pooler_output


def student_step(models: StepModels, cfg: RGLCDConfig, batch: int, latent_side: int) -> None:
    """Forward (under autocast when the recipe asks), backward, gradients dropped."""
    parts, side = models.parts, latent_side
    alphas = torch.linspace(0.9991, 0.0047, cfg.lcd.num_train_timesteps)
    latents = torch.randn(batch, parts.unet.config.in_channels, side, side)
    vocab = parts.text_encoders[0].config.vocab_size
    ids = torch.randint(0, vocab, (batch, TOKENS))
    t_start = torch.full((batch,), 519, dtype=torch.long)
    t_end, w = t_start - 20, torch.full((batch,), 8.0)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.model.mixed_precision)
    with torch.autocast(latents.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        with torch.no_grad():
            image_side = side * 8
            cond, added = _conditioning(parts.text_encoders, ids, batch, image_side)
            uncond, uncond_added = _conditioning(parts.text_encoders, ids[:1], 1, image_side)
        w_embedding = None
        if models.student.config.time_cond_proj_dim is not None:
            w_embedding = guidance_scale_embedding(w, models.student.config.time_cond_proj_dim)
        z_start = latents + torch.randn_like(latents)
        online = consistency_function(
            models.student, z_start, t_start, w_embedding, cond, added, alphas,
            _prediction_type(cfg),
        )
        z_end = guided_teacher_step(
            models.teacher_unet, z_start, t_start, alphas[t_end], cond, uncond, w, alphas,
            _prediction_type(cfg), added, uncond_added,
        )
        with torch.no_grad():
            target = consistency_function(
                models.target or models.student, z_end, t_end, w_embedding, cond, added, alphas,
                _prediction_type(cfg),
            )
        loss = distance_loss(online, target, cfg.lcd.loss, cfg.lcd.huber_c)
        if cfg.reward.enabled:
            rewards = _reward(models, cfg, online, ids)
            loss = loss - cfg.reward.beta * rewards.float().mean()
    loss.backward()


def lrm_update(models: StepModels, cfg: RGLCDConfig, batch: int, latent_side: int) -> None:
    """Algorithm 4's LRM update on min(lrm.batch_size, batch) triplets (z0, z1, z2)."""
    lrm = models.parts.lrm
    n = min(cfg.lrm.batch_size, batch)
    latents = torch.randn(3 * n, lrm.config.latent.latent_channels, latent_side, latent_side)
    ids = torch.randint(0, lrm.text_model.config.vocab_size, (3 * n, TOKENS))
    rewards = lrm.reward(latents, input_ids=ids, attention_mask=torch.ones_like(ids)).view(n, 3)
    # eq. 12's loss is a few scalars per triplet; its data-dependent checks (expert scores
    # present and finite) cannot run on fake tensors, so a softmax of the same rewards
    # stands in for it: the memory and FLOPs are the LRM's forward and backward.
    loss = -(rewards / cfg.lrm.tau_l).log_softmax(dim=-1)[:, 0].mean()
    loss.backward()


def _prediction_type(cfg: RGLCDConfig) -> str:
    return "epsilon" if cfg.model.prediction_type == "auto" else cfg.model.prediction_type


def measure_step(models: StepModels, cfg: RGLCDConfig, batch: int) -> StepMeasurement:
    """One step's live-tensor peak (and the gradients' share of it) and its FLOPs."""
    latent_side = cfg.model.resolution // 8
    tracker = LiveBytes()
    tracker.ignore(models.weights())
    with FlopCounterMode(display=False) as flops, tracker:
        student_step(models, cfg, batch, latent_side)
        grads = [p.grad for p in models.trainable() if p.grad is not None]
        grad_bytes, student_peak = tracker.peak_bytes_of(grads), tracker.peak
        _drop_grads(models.trainable())
        del grads
        if cfg.uses_lrm:
            lrm_update(models, cfg, batch, latent_side)
            _drop_grads(models.lrm_trainable())
    if tracker.peak > student_peak:  # the LRM update's peak: the student's gradients are gone
        grad_bytes = 0
    return StepMeasurement(
        batch, tracker.peak, grad_bytes, flops.get_total_flops(), student_peak
    )


def _drop_grads(parameters: list[nn.Parameter]) -> None:
    for p in parameters:
        p.grad = None
