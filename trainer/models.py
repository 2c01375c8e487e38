"""Loading the frozen teacher's components (UNet, VAE, text encoder(s), tokenizer(s), schedule).

The teacher is a diffusers pipeline folder given as a local path or a hub id that is already
in the local Hugging Face cache: nothing is downloaded at run time (``local_files_only=True``).
Family "sd" (SD1.x/2.x, ``StableDiffusionPipeline``): ``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``. Family "sdxl" (``StableDiffusionXLPipeline``) adds
``text_encoder_2/`` (``CLIPTextModelWithProjection``) and ``tokenizer_2/``; its UNet takes
SDXL's micro-conditioning (``addition_embed_type="text_time"``), which is how a folder's
family is recognised (`check_family`). `check_teacher_source` runs on the driver before any
Ray work so a wrong path fails fast; `load_teacher` runs inside each training worker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from rglcd import storage
from trainer.family import TEACHER_SUBFOLDERS, family_of_unet, model_family
from trainer.lcd.predictions import check_prediction_type

if TYPE_CHECKING:  # imported where models load: the driver's checks read JSON only
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer



@dataclass
class TeacherParts:
    """Everything LCD needs from the teacher; models are frozen and in eval mode."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    alphas_cumprod: torch.Tensor  # (T,) float32, from the teacher's training schedule
    prediction_type: str  # epsilon | v_prediction | sample (docs/method.md §1)
    scheduler: DDPMScheduler | None = None  # the training schedule (export reads its config)
    family: str = "sd"  # sd | sdxl (module docstring)
    text_encoder_2: CLIPTextModelWithProjection | None = None  # SDXL only
    tokenizer_2: CLIPTokenizer | None = None  # SDXL only
    force_zeros_for_empty_prompt: bool = False  # SDXL pipelines: uncond = zeros (conditioning.py)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell (8 for SD/SDXL), as diffusers pipelines compute it."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def frozen_modules(self) -> list[torch.nn.Module]:
        extra = [self.text_encoder_2] if self.text_encoder_2 is not None else []
        return [self.unet, self.vae, self.text_encoder, *extra]


def _local_folder(source: str) -> Path | None:
    """A folder on this node for `source`: itself when local (pkg:// found in this node's
    package), a node-local cached copy of an s3:// / gs:// folder; None for a hub id."""
    if not storage.is_local(source):
        try:
            return Path(storage.local_copy(source))  # one download per node (file-locked)
        except (FileNotFoundError, OSError) as err:
            raise ValueError(
                f"model folder {source!r} could not be read ({err}); check the URI and the "
                "storage credentials (docs/cluster.md, Storage)"
            ) from err
    path = Path(storage.local_path(source))
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
            f"{missing}; point it at a diffusers pipeline folder of model.family's layout "
            "(one written by StableDiffusion(XL)Pipeline.save_pretrained)."
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


def check_family(unet_config: dict, family: str, source: str) -> None:
    """The UNet's conditioning must match model.family (SDXL: addition_embed_type text_time)."""
    found = family_of_unet(unet_config)
    if found.name != family:
        raise ValueError(
            f"model.teacher={source!r} is an {found.pipeline_class} (its UNet has "
            f"addition_embed_type={unet_config.get('addition_embed_type')!r}) but "
            f"model.family={family!r}; set model.family={found.name}."
        )


def _json_config(path: Path) -> dict:
    """A component's JSON config, read directly (importing diffusers for this takes seconds)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path} is not a readable JSON config ({err}); point model.teacher at a complete "
            "diffusers pipeline folder."
        ) from err


def teacher_folder(source: str, revision: str | None = None, family: str = "sd") -> Path:
    """The teacher's folder, checked to hold `family`'s layout (the family check comes first,
    so an SD folder given as SDXL says "set model.family=sd", not "text_encoder_2 missing")."""
    subfolders = model_family(family).subfolders
    folder = resolve_teacher_source(source, revision)
    check_family(_json_config(folder / "unet" / "config.json"), family, source)
    return resolve_teacher_source(source, revision, subfolders)


def check_teacher_source(source: str, revision: str | None = None, family: str = "sd") -> str:
    """Driver-side validation (no model loading): family and the scheduler's prediction type.

    Reads only the UNet's and the scheduler's JSON configs, so it costs milliseconds; a
    teacher in object storage is read in place (the workers download it, not the driver).
    """
    if not storage.is_local(source):
        config = _remote_teacher_config(source, family)
    else:
        folder = teacher_folder(source, revision, family)
        config = _json_config(folder / "scheduler" / "scheduler_config.json")
    prediction_type = config.get("prediction_type", "epsilon")
    check_prediction_type(prediction_type)
    return prediction_type


def _remote_teacher_config(source: str, family: str) -> dict:
    """teacher_folder's checks on a folder in object storage; returns its scheduler config."""

    def read(*parts: str) -> dict:
        try:
            return json.loads(storage.read_text(storage.join(source, *parts)))
        except (OSError, ValueError) as err:
            raise ValueError(
                f"model.teacher={source!r}: cannot read {'/'.join(parts)} ({err}); point it at "
                "a diffusers pipeline folder and check the storage credentials"
            ) from err

    check_family(read("unet", "config.json"), family, source)
    missing = [n for n in model_family(family).subfolders if not storage.is_dir(
        storage.join(source, n))]
    if missing:
        raise ValueError(f"model.teacher={source!r} lacks the subfolders {missing}")
    return read("scheduler", "scheduler_config.json")


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
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(folder, local_files_only=True, torch_dtype=torch.float32)


def _load_text_parts(folder: Path, family: str) -> dict:
    """text_encoder + tokenizer (SDXL: also text_encoder_2, tokenizer_2, force_zeros flag)."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    parts: dict = {
        "text_encoder": CLIPTextModel.from_pretrained(
            folder / "text_encoder", local_files_only=True, dtype=torch.float32
        ),
        "tokenizer": CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True),
    }
    if model_family(family).dual_text_encoders:
        parts["text_encoder_2"] = CLIPTextModelWithProjection.from_pretrained(
            folder / "text_encoder_2", local_files_only=True, dtype=torch.float32
        )
        parts["tokenizer_2"] = CLIPTokenizer.from_pretrained(
            folder / "tokenizer_2", local_files_only=True
        )
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        # StableDiffusionXLPipeline's default when the folder does not say (SDXL base: true)
        force_zeros = index.get("force_zeros_for_empty_prompt", True)
        parts["force_zeros_for_empty_prompt"] = bool(force_zeros)
    return parts


def load_teacher(
    source: str,
    device: torch.device | str = "cpu",
    vae: str | None = None,
    revision: str | None = None,
    family: str = "sd",
) -> TeacherParts:
    """Load all teacher components from `source` (local folder or cached hub id), frozen.

    `vae` replaces the teacher's VAE (a pipeline folder or an AutoencoderKL folder); `family`
    is model.family (module docstring).
    """
    from diffusers import DDPMScheduler, UNet2DConditionModel

    folder = teacher_folder(source, revision, family)
    # float32 master weights whatever the folder stores (e.g. fp16 to save space);
    # model.mixed_precision autocasts the forward passes instead.
    unet = UNet2DConditionModel.from_pretrained(
        folder / "unet", local_files_only=True, torch_dtype=torch.float32
    )
    vae_model = load_vae(vae or source, None if vae else revision)
    # The training schedule, whatever sampler the folder ships (DDIM/PNDM/Euler...):
    # DDPMScheduler reads the same betas and prediction_type keys.
    scheduler = DDPMScheduler.from_pretrained(folder / "scheduler", local_files_only=True)
    check_prediction_type(scheduler.config.prediction_type)
    teacher = TeacherParts(
        unet=unet,
        vae=vae_model,
        alphas_cumprod=scheduler.alphas_cumprod.to(torch.float32),
        prediction_type=scheduler.config.prediction_type,
        scheduler=scheduler,
        family=family,
        **_load_text_parts(folder, family),
    )
    for module in teacher.frozen_modules:
        module.requires_grad_(False).eval().to(device)
    return teacher


@torch.no_grad()
def encode_prompts(
    text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, prompts: list[str]
) -> torch.Tensor:
    """SD text conditioning: last hidden state of the padded prompts, (B, 77, D)."""
    return text_encoder(token_ids(tokenizer, prompts, text_encoder))[0]


def token_ids(tokenizer, prompts: list[str], encoder: torch.nn.Module) -> torch.Tensor:
    """(B, max_length) ids padded and truncated as SD pipelines do, on `encoder`'s device."""
    ids = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return ids.to(next(encoder.parameters()).device)
