"""Text conditioning of the teacher's UNet for SD1.x/2.x and SDXL teachers.

SD (one CLIP text encoder): ``encoder_hidden_states`` = last hidden state, (B, 77, D).

SDXL, as diffusers' ``StableDiffusionXLPipeline`` (``encode_prompt`` + ``_get_add_time_ids``):
  encoder_hidden_states = cat(penultimate hidden state of text_encoder,
                              penultimate hidden state of text_encoder_2), (B, 77, D1 + D2)
  added_cond_kwargs     = {"text_embeds": pooled ``text_embeds`` of text_encoder_2, (B, P),
                           "time_ids": (orig_h, orig_w, crop_top, crop_left, target_h, target_w),
                           (B, 6)}
The time ids use original size = target size = the training image size and crop (0, 0),
what the pipeline passes at sampling time and what the LCM-LoRA script's
``--use_fix_crop_and_size`` trains with: the latent shards carry no original sizes or crops.

Unconditional branch of CFG: SD encodes the empty prompt (docs/method.md §1). SDXL pipelines
with ``force_zeros_for_empty_prompt`` (SDXL base sets it; SDXL was trained with dropped captions
as zeros) use all-zero hidden states and pooled embeds instead, as do diffusers' LCM-LoRA SDXL
script and pipeline; a non-empty `lcd.uncond_prompt` is encoded like any prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from trainer.family import model_family
from trainer.models import TeacherParts, encode_prompts, token_ids


@dataclass(frozen=True)
class Conditioning:
    """What the UNet is conditioned on besides (z, t); SD uses only `hidden_states`."""

    hidden_states: torch.Tensor  # (B, 77, D)
    text_embeds: torch.Tensor | None = None  # SDXL pooled text, (B, P)
    time_ids: torch.Tensor | None = None  # SDXL micro-conditioning, (B, 6)

    @property
    def added(self) -> dict[str, torch.Tensor] | None:
        """``added_cond_kwargs`` of the UNet call (None for SD)."""
        if self.text_embeds is None:
            return None
        assert self.time_ids is not None, "SDXL conditioning needs time ids (with_time_ids)"
        return {"text_embeds": self.text_embeds, "time_ids": self.time_ids}

    def with_time_ids(self, image_size: tuple[int, int]) -> Conditioning:
        """SDXL: attach the time ids of an (H, W) training image; SD: unchanged."""
        if self.text_embeds is None:
            return self
        time_ids = sdxl_time_ids(image_size, self.text_embeds.shape[0])
        return replace(self, time_ids=time_ids.to(self.text_embeds))

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Conditioning:
        def move(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.to(device, dtype)

        return Conditioning(move(self.hidden_states), move(self.text_embeds), move(self.time_ids))


def sdxl_time_ids(image_size: tuple[int, int], batch_size: int) -> torch.Tensor:
    """(B, 6) float32: original size + crop (0, 0) + target size, all the training size."""
    height, width = image_size
    row = torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32)
    return row.expand(batch_size, 6)


@torch.no_grad()
def encode_sdxl_prompts(
    text_encoders: tuple, tokenizers: tuple, prompts: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden (B, 77, D1 + D2), pooled (B, P)) exactly as ``StableDiffusionXLPipeline``."""
    hidden, pooled = [], None
    for encoder, tokenizer in zip(text_encoders, tokenizers, strict=True):
        out = encoder(token_ids(tokenizer, prompts, encoder), output_hidden_states=True)
        if out[0].ndim == 2:  # CLIPTextModelWithProjection: text_embeds (the last one wins)
            pooled = out[0]
        hidden.append(out.hidden_states[-2])  # penultimate layer (SDXL's clip_skip=None)
    if pooled is None:
        raise ValueError(
            "none of the SDXL text encoders returned pooled text_embeds; text_encoder_2 must be "
            "a CLIPTextModelWithProjection (the StableDiffusionXLPipeline layout)."
        )
    return torch.cat(hidden, dim=-1), pooled


def encode_text(teacher: TeacherParts, prompts: list[str]) -> Conditioning:
    """The prompts' conditioning for the teacher's family (SDXL: call with_time_ids next)."""
    if model_family(teacher.family).dual_text_encoders:
        hidden, pooled = encode_sdxl_prompts(
            (teacher.text_encoder, teacher.text_encoder_2),
            (teacher.tokenizer, teacher.tokenizer_2),
            prompts,
        )
        return Conditioning(hidden, pooled)
    return Conditioning(encode_prompts(teacher.text_encoder, teacher.tokenizer, prompts))


def encode_uncond(teacher: TeacherParts, prompt: str = "") -> Conditioning:
    """One row of CFG's unconditional conditioning (module docstring: SD vs SDXL zeros)."""
    cond = encode_text(teacher, [prompt])
    family = model_family(teacher.family)
    if family.dual_text_encoders and prompt == "" and teacher.force_zeros_for_empty_prompt:
        zeros = torch.zeros_like
        return Conditioning(zeros(cond.hidden_states), zeros(cond.text_embeds))
    return cond


def image_size_of(latents: torch.Tensor, teacher: TeacherParts) -> tuple[int, int]:
    """(H, W) in pixels of the images behind latents (B, C, h, w)."""
    factor = teacher.vae_scale_factor
    return latents.shape[-2] * factor, latents.shape[-1] * factor
