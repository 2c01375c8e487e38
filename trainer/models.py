"""Loading the frozen teacher's components (UNet, VAE, text encoder, tokenizer, schedule).

The teacher is a diffusers Stable-Diffusion-layout folder (``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``) given as a local path or a hub id that is
already in the local Hugging Face cache: nothing is downloaded at run time
(``local_files_only=True``). `check_teacher_source` runs on the driver before any Ray work so
a wrong path fails fast; `load_teacher` runs inside each training worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from trainer.lcd.predictions import check_prediction_type

TEACHER_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass
class TeacherParts:
    """Everything LCD needs from the teacher; models are frozen and in eval mode."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    alphas_cumprod: torch.Tensor  # (T,) float32, from the teacher's training schedule
    prediction_type: str  # epsilon | v_prediction | sample (REFERENCE section 1)
    scheduler: DDPMScheduler | None = None  # the training schedule (export reads its config)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)


def _local_folder(source: str) -> Path | None:
    path = Path(source).expanduser()
    return path if path.exists() else None


def resolve_teacher_source(
    source: str, revision: str | None = None, subfolders: tuple[str, ...] = TEACHER_SUBFOLDERS
) -> Path:
    """A local folder for `source` (a path, or a hub id found in the local HF cache).

    Raises ValueError saying what to change when neither exists or subfolders are missing.
    """
    folder = _local_folder(source)
    if folder is None:
        folder = _cached_hub_snapshot(source, revision)
    if folder is None:
        raise ValueError(
            f"model.teacher={source!r} is neither an existing folder nor a hub id in the local "
            "Hugging Face cache (downloads are disabled); set model.teacher to a diffusers "
            "pipeline folder, e.g. model.teacher=/path/to/stable-diffusion-v1-5."
        )
    missing = [name for name in subfolders if not (folder / name).is_dir()]
    if missing:
        raise ValueError(
            f"model.teacher={source!r} resolves to {folder}, which lacks the subfolders "
            f"{missing}; point it at a diffusers StableDiffusionPipeline folder "
            "(one written by save_pretrained)."
        )
    return folder


def _cached_hub_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The cached snapshot folder of a hub repo id, or None (never downloads)."""
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/", "~")):
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None


def check_teacher_source(source: str, revision: str | None = None) -> str:
    """Driver-side validation (no model loading): the scheduler's prediction type.

    Reads only ``scheduler/scheduler_config.json``, so it costs milliseconds.
    """
    folder = resolve_teacher_source(source, revision)
    config = DDPMScheduler.load_config(folder / "scheduler")
    prediction_type = config.get("prediction_type", "epsilon")
    check_prediction_type(prediction_type)
    return prediction_type


def load_vae(source: str, revision: str | None = None) -> AutoencoderKL:
    """The teacher's VAE (`<folder>/vae`) or a standalone AutoencoderKL folder / hub id."""
    folder = resolve_teacher_source(source, revision, subfolders=())
    if (folder / "vae").is_dir():
        folder = folder / "vae"
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"{source!r} holds no AutoencoderKL (no config.json in {folder}); pass a pipeline "
            "folder with vae/ or an AutoencoderKL folder."
        )
    return AutoencoderKL.from_pretrained(folder, local_files_only=True, torch_dtype=torch.float32)


def load_teacher(
    source: str,
    device: torch.device | str = "cpu",
    vae: str | None = None,
    revision: str | None = None,
) -> TeacherParts:
    """Load all teacher components from `source` (local folder or cached hub id), frozen.

    `vae` replaces the teacher's VAE (a pipeline folder or an AutoencoderKL folder).
    """
    folder = resolve_teacher_source(source, revision)
    # float32 master weights whatever the folder stores (e.g. fp16 to save space);
    # model.mixed_precision autocasts the forward passes instead.
    unet = UNet2DConditionModel.from_pretrained(
        folder / "unet", local_files_only=True, torch_dtype=torch.float32
    )
    vae_model = load_vae(vae or source, None if vae else revision)
    text_encoder = CLIPTextModel.from_pretrained(
        folder / "text_encoder", local_files_only=True, dtype=torch.float32
    )
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    # The training schedule, whatever sampler the folder ships (DDIM/PNDM/...): DDPMScheduler
    # reads the same betas and prediction_type keys.
    scheduler = DDPMScheduler.from_pretrained(folder / "scheduler", local_files_only=True)
    check_prediction_type(scheduler.config.prediction_type)
    for module in (unet, vae_model, text_encoder):
        module.requires_grad_(False).eval().to(device)
    return TeacherParts(
        unet=unet,
        vae=vae_model,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        alphas_cumprod=scheduler.alphas_cumprod.to(torch.float32),
        prediction_type=scheduler.config.prediction_type,
        scheduler=scheduler,
    )


@torch.no_grad()
def encode_prompts(
    text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, prompts: list[str]
) -> torch.Tensor:
    """SD text conditioning: last hidden state of the padded prompts, (B, 77, D)."""
    ids = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    device = next(text_encoder.parameters()).device
    return text_encoder(ids.to(device))[0]
