"""Export the distilled model as a diffusers pipeline folder (docs/method.md §4).

The folder holds the EMA target UNet, the teacher's VAE, text encoder and tokenizer, and an
``LCMScheduler`` built from the teacher's scheduler config with the teacher's prediction
type and ``original_inference_steps = N`` (the DDIM solver grid of training). Its pipeline
class is ``LatentConsistencyModelPipeline``, so::

    pipe = DiffusionPipeline.from_pretrained("<output_dir>/pipeline")
    images = pipe(prompt, num_inference_steps=4, guidance_scale=8.5).images

samples in 1-4 steps with no further code. That pipeline feeds ``w = guidance_scale - 1``
through the UNet's ``time_cond_proj_dim`` guidance embedding (1000*w, sinusoidal, as in
training) and runs no real CFG: one UNet call per step. The safety checker is left out.

LCM-LoRA runs (trainer/lcd/lora.py) export the adapters instead, in the file diffusers'
``load_lora_weights`` reads (``pytorch_lora_weights.safetensors``, with the peft LoraConfig
as metadata so alpha != rank round-trips)::

    pipe = StableDiffusionXLPipeline.from_pretrained("stabilityai/stable-diffusion-xl-base-1.0")
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights("<output_dir>/lora")
    images = pipe(prompt, num_inference_steps=4, guidance_scale=1.0).images

and, on request, the teacher pipeline with the adapters fused into its UNet and an
``LCMScheduler`` (`export_fused_lora_pipeline`). Such a UNet has no guidance embedding:
guidance_scale 1 runs no CFG (one UNet call per step), as with the published LCM-LoRAs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusers import (
    LatentConsistencyModelPipeline,
    LCMScheduler,
    UNet2DConditionModel,
)

from trainer.family import model_family

TEACHER_PARTS = ("vae", "text_encoder", "tokenizer")
LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"  # diffusers' default file name


def _teacher_parts(teacher: str | Path | dict[str, Any]) -> tuple[dict[str, Any], dict]:
    """(vae, text_encoder, tokenizer) and the scheduler config, from a folder or a dict."""
    if isinstance(teacher, dict):
        missing = [k for k in TEACHER_PARTS if k not in teacher]
        scheduler = teacher.get("scheduler") or teacher.get("noise_scheduler")
        if missing or scheduler is None:
            raise ValueError(
                f"Teacher components lack {missing or ['scheduler']}; pass a dict with keys "
                f"{TEACHER_PARTS + ('scheduler',)} or the teacher's pipeline folder."
            )
        return {k: teacher[k] for k in TEACHER_PARTS}, dict(scheduler.config)
    folder = Path(teacher)
    if not (folder / "model_index.json").is_file():
        raise ValueError(
            f"Teacher path {folder} is not a diffusers pipeline folder (no model_index.json); "
            "point it at a saved Stable Diffusion pipeline."
        )
    # Load only what the export needs: the teacher UNet and safety checker stay on disk.
    teacher_pipe = LatentConsistencyModelPipeline.from_pretrained(
        folder,
        unet=None,
        scheduler=None,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    parts = {k: getattr(teacher_pipe, k) for k in TEACHER_PARTS}
    return parts, dict(LCMScheduler.load_config(folder, subfolder="scheduler"))


def lcm_scheduler_from_teacher(
    teacher_scheduler_config: dict,
    prediction_type: str | None = None,
    original_inference_steps: int = 50,
) -> LCMScheduler:
    """An ``LCMScheduler`` on the teacher's noise schedule (docs/method.md §4).

    The prediction type must be the teacher's (a default epsilon scheduler on a
    v-prediction model gives garbage); passing a different one is an error.
    """
    teacher_type = teacher_scheduler_config.get("prediction_type", "epsilon")
    if prediction_type is not None and prediction_type != teacher_type:
        raise ValueError(
            f"prediction_type={prediction_type!r} differs from the teacher scheduler's "
            f"{teacher_type!r}; the exported scheduler must use the teacher's. Fix the "
            "config (or pass prediction_type=None to take the teacher's)."
        )
    if original_inference_steps < 1:
        raise ValueError(
            f"original_inference_steps={original_inference_steps} must be the number of DDIM "
            "solver steps N used in training (50 in the paper)."
        )
    config = {k: v for k, v in teacher_scheduler_config.items() if not k.startswith("_")}
    return LCMScheduler.from_config(
        config, prediction_type=teacher_type, original_inference_steps=original_inference_steps
    )


def build_lcm_pipeline(
    target_unet: UNet2DConditionModel,
    teacher: str | Path | dict[str, Any],
    prediction_type: str | None = None,
    original_inference_steps: int = 50,
    vae: Any = None,
) -> LatentConsistencyModelPipeline:
    """The in-memory ``LatentConsistencyModelPipeline`` that ``export_pipeline`` saves."""
    if getattr(target_unet.config, "time_cond_proj_dim", None) is None:
        raise ValueError(
            "The target UNet has no time_cond_proj_dim, so LatentConsistencyModelPipeline "
            "cannot feed it the guidance embedding; export the student/target built with "
            "time_cond_proj_dim (256 in the paper), not the teacher UNet."
        )
    parts, scheduler_config = _teacher_parts(teacher)
    if vae is not None:  # the run replaced the teacher's VAE (config model.vae)
        parts["vae"] = vae
    scheduler = lcm_scheduler_from_teacher(
        scheduler_config, prediction_type, original_inference_steps
    )
    return LatentConsistencyModelPipeline(
        **parts,
        unet=target_unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def export_pipeline(
    target_unet: UNet2DConditionModel,
    teacher: str | Path | dict[str, Any],
    out_dir: str | Path,
    prediction_type: str | None = None,
    original_inference_steps: int = 50,
    vae: Any = None,
) -> Path:
    """Save target UNet + teacher VAE / text encoder / tokenizer + LCMScheduler to `out_dir`.

    `teacher` is the teacher's pipeline folder or a dict of its components (keys vae,
    text_encoder, tokenizer, scheduler). `prediction_type` None takes the teacher's (config
    "auto"); `vae` replaces the teacher's VAE when the run used another one. Returns
    `out_dir`, loadable with ``DiffusionPipeline.from_pretrained(out_dir)`` (safetensors).
    """
    pipe = build_lcm_pipeline(
        target_unet, teacher, prediction_type, original_inference_steps, vae=vae
    )
    out_dir = Path(out_dir)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def export_lora_adapters(unet: UNet2DConditionModel, out_dir: str | Path, family: str) -> Path:
    """Save `unet`'s LoRA adapters where ``pipe.load_lora_weights(out_dir)`` finds them.

    peft state dict -> diffusers key format, written by the family's pipeline class
    (``StableDiffusionXLPipeline.save_lora_weights`` for SDXL) with the LoraConfig as
    metadata. Returns `out_dir`.
    """
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    from trainer.lcd.lora import ADAPTER_NAME, has_lora_adapters  # deferred: loads torch

    if not has_lora_adapters(unet):
        raise ValueError(
            "The UNet has no LoRA adapters; export_lora_adapters is for LCM-LoRA runs "
            "(model.lora set). Export a full student with export_pipeline."
        )
    state = get_peft_model_state_dict(unet, adapter_name=ADAPTER_NAME)
    state = {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
    out_dir = Path(out_dir)
    model_family(family).pipeline.save_lora_weights(
        out_dir,
        unet_lora_layers=convert_state_dict_to_diffusers(state),
        unet_lora_adapter_metadata=unet.peft_config[ADAPTER_NAME].to_dict(),
        safe_serialization=True,
    )
    return out_dir


def export_fused_lora_pipeline(
    adapter_dir: str | Path,
    teacher_folder: str | Path,
    out_dir: str | Path,
    family: str,
    original_inference_steps: int = 50,
    vae: Any = None,
) -> Path:
    """The teacher pipeline with the adapters at `adapter_dir` fused into its UNet, saved with
    an ``LCMScheduler`` (teacher's schedule and prediction type) to `out_dir`.

    Goes through diffusers' own path (``load_lora_weights`` -> ``fuse_lora`` ->
    ``unload_lora_weights``), so it also checks that the exported adapters load. `vae`
    replaces the teacher's VAE when the run used another one. Loads a full copy of the
    teacher on the CPU (SDXL: ~14 GB in float32).
    """
    pipeline_cls = model_family(family).pipeline
    extra = {"vae": vae} if vae is not None else {}
    if model_family(family).has_safety_checker:
        extra |= {"safety_checker": None, "feature_extractor": None,
                  "requires_safety_checker": False}
    pipe = pipeline_cls.from_pretrained(teacher_folder, local_files_only=True, **extra)
    pipe.load_lora_weights(adapter_dir)
    pipe.fuse_lora()
    pipe.unload_lora_weights()  # the fused weights stay; the peft layers go
    pipe.scheduler = lcm_scheduler_from_teacher(
        dict(pipe.scheduler.config), original_inference_steps=original_inference_steps
    )
    out_dir = Path(out_dir)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir
