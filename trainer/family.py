"""Teacher model families: what differs between SD1.x/2.x and SDXL teachers, one object each.

A family says how a teacher pipeline folder is laid out and recognised, how its prompts
condition the UNet, whether it is distilled as LCM-LoRA only, and which diffusers pipeline
class loads it and writes its exports. `model.family` names one (`FAMILIES`); the loader
(models.py), the text conditioning (conditioning.py), the config check and the export
read these fields instead of comparing family names.
"""

from __future__ import annotations

from dataclasses import dataclass

TEACHER_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass(frozen=True)
class ModelFamily:
    name: str
    pipeline_class: str  # diffusers class of a teacher folder and of the exports
    subfolders: tuple[str, ...]  # what a teacher pipeline folder must hold
    # the UNet config's addition_embed_type: how a folder's family is recognised
    addition_embed_type: str | None
    # two text encoders, concatenated hidden states + pooled text + time ids (SDXL)
    dual_text_encoders: bool
    lora_only: bool  # distilled as LCM-LoRA only (paper appendix D for SDXL)
    has_safety_checker: bool  # the pipeline class takes safety_checker / feature_extractor

    @property
    def pipeline(self) -> type:
        """The diffusers pipeline class (imported on first use)."""
        import diffusers

        return getattr(diffusers, self.pipeline_class)


SD = ModelFamily(
    name="sd",
    pipeline_class="StableDiffusionPipeline",
    subfolders=TEACHER_SUBFOLDERS,
    addition_embed_type=None,
    dual_text_encoders=False,
    lora_only=False,
    has_safety_checker=True,
)
SDXL = ModelFamily(
    name="sdxl",
    pipeline_class="StableDiffusionXLPipeline",
    subfolders=TEACHER_SUBFOLDERS + ("text_encoder_2", "tokenizer_2"),
    addition_embed_type="text_time",
    dual_text_encoders=True,
    lora_only=True,
    has_safety_checker=False,
)
FAMILIES: dict[str, ModelFamily] = {family.name: family for family in (SD, SDXL)}


def model_family(name: str) -> ModelFamily:
    """The family `model.family` names (ValueError for an unknown name)."""
    if name not in FAMILIES:
        raise ValueError(f"model.family={name!r} is unknown; use one of {tuple(FAMILIES)}.")
    return FAMILIES[name]


def family_of_unet(unet_config: dict) -> ModelFamily:
    """The family whose UNet conditioning `unet_config` has: the one whose addition_embed_type
    marker it carries, else the family with plain text conditioning (no marker)."""
    marker = unet_config.get("addition_embed_type")
    marked = [f for f in FAMILIES.values() if f.addition_embed_type is not None]
    plain = [f for f in FAMILIES.values() if f.addition_embed_type is None]
    return next((f for f in marked if f.addition_embed_type == marker), plain[0])
