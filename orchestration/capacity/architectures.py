"""The real architectures of a recipe, from committed config JSON (no weights, no downloads).

`rglcd/arch_configs/` holds the public model configs of the teachers the recipes name
(SD 1.5, SD 2.1-base, SD 2.1-768, SDXL base 1.0: UNet, VAE, CLIP text encoder(s)), the LRM
the LRM recipes pretrain (CLIP ViT-L/14 text tower + the SD-sized latent ViT of
`rglcd-pretrain-lrm`) and the CLIP-family experts (HPSv2.1 and PickScore: ViT-H-14;
CLIPScore: ViT-L/14; all as transformers `CLIPModel` configs). A recipe whose teacher is a
local pipeline folder (e.g. the toy world's) is read from that folder instead.

`build_parts` instantiates them in whatever mode is active: under FakeTensorMode (the plan:
shapes and dtypes only, no memory) or for real with random weights (the CPU benchmark).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from rglcd import storage
from trainer.config import RGLCDConfig
from trainer.lrm.model import LatentRewardModel, LRMArchitecture

ARCH_ROOT = Path(str(resources.files("rglcd") / "arch_configs"))
# Hub ids the recipes use -> their folder under rglcd/arch_configs
TEACHER_ARCHS = {
    "runwayml/stable-diffusion-v1-5": "sd15",
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "sd15",
    "stabilityai/stable-diffusion-2-1-base": "sd21",
    "stabilityai/stable-diffusion-2-1": "sd21v",
    "stabilityai/stable-diffusion-xl-base-1.0": "sdxl",
}
EXPERT_ARCHS = {"hpsv2.1": "hpsv2.1", "pickscore": "pickscore", "clipscore": "clipscore"}


@dataclass(frozen=True)
class ArchConfigs:
    """Config dicts of one recipe's models (None where the recipe does not use one)."""

    name: str
    unet: dict
    vae: dict
    text_encoders: tuple[dict, ...]
    lrm: dict | None = None
    expert: dict | None = None  # a CLIPModel config (direct reward, or a co-located expert)


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _local_folder(location: str) -> Path | None:
    """The folder of a local location (pkg:// found in this package); None for a URI."""
    return Path(storage.local_path(location)) if storage.is_local(location) else None


def teacher_archs(cfg: RGLCDConfig) -> tuple[str, Path]:
    """(name, folder) of the teacher's configs: a committed set, or a local pipeline folder."""
    teacher = cfg.model.teacher
    local = _local_folder(teacher)
    if local is not None and (local / "unet" / "config.json").exists():
        return local.name, local
    if teacher in TEACHER_ARCHS:
        name = TEACHER_ARCHS[teacher]
        return name, ARCH_ROOT / name
    raise ValueError(
        f"model.teacher={teacher!r} is neither a local diffusers pipeline folder nor one of the "
        f"teachers with committed configs ({sorted(TEACHER_ARCHS)}); pass a local folder "
        "holding unet/, vae/ and text_encoder/ config.json files."
    )


def _component(folder: Path, name: str) -> dict | None:
    """A pipeline folder's `name/config.json`, or a committed set's `name.json`."""
    for path in (folder / name / "config.json", folder / f"{name}.json"):
        if path.exists():
            return _read(path)
    return None


def lrm_config(cfg: RGLCDConfig) -> dict | None:
    """The LRM's config: the checkpoint's own when it exists locally, else the SD-sized one."""
    if not cfg.uses_lrm:
        return None
    folder = _local_folder(cfg.lrm.checkpoint)
    if folder is not None and (folder / "config.json").exists():
        return _read(folder / "config.json")
    return _read(ARCH_ROOT / "lrm" / "config.json")


def expert_config(kind: str) -> dict | None:
    """A CLIP-family expert's CLIPModel config (None for kinds without a committed config)."""
    name = EXPERT_ARCHS.get(kind)
    return None if name is None else _read(ARCH_ROOT / "experts" / f"{name}.json")


def direct_reward_kind(cfg: RGLCDConfig) -> str | None:
    """The scorer kind the train worker runs with gradient (direct mode), else None."""
    if not cfg.reward.enabled or cfg.reward.mode != "direct":
        return None
    return next(s.kind for s in cfg.serve.scorers if s.name == cfg.reward.model)


def recipe_archs(cfg: RGLCDConfig) -> ArchConfigs:
    name, folder = teacher_archs(cfg)
    encoders = tuple(
        c for c in (_component(folder, "text_encoder"), _component(folder, "text_encoder_2")) if c
    )
    kind = direct_reward_kind(cfg)
    expert = None if kind is None else expert_config(kind)
    if kind is not None and expert is None:
        raise ValueError(
            f"the direct reward {kind!r} has no committed architecture to plan with; the plan "
            f"knows {sorted(EXPERT_ARCHS)}"
        )
    return ArchConfigs(
        name=name,
        unet=_component(folder, "unet"),
        vae=_component(folder, "vae"),
        text_encoders=encoders,
        lrm=lrm_config(cfg),
        expert=expert,
    )


@dataclass
class ModelParts:
    """Instantiated modules of one recipe (fake or real tensors)."""

    unet: object
    vae: object
    text_encoders: list
    lrm: object | None
    expert: object | None


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Modules built inside get `dtype` weights (no cast afterwards: casting fake tensors fails)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_parts(archs: ArchConfigs, frozen_dtype: torch.dtype = torch.float32) -> ModelParts:
    """Instantiate every module in the active mode (FakeTensorMode or real), frozen, in
    `frozen_dtype` (the trainer loads float32) except the LRM, which trains in float32."""
    with default_dtype(frozen_dtype):
        parts = _build(archs)
    if archs.lrm is not None:
        parts.lrm = LatentRewardModel(LRMArchitecture.from_dict(archs.lrm)).requires_grad_(False).eval()
    return parts


def _build(archs: ArchConfigs) -> ModelParts:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel.from_config(archs.unet)
    vae = AutoencoderKL.from_config(archs.vae)
    encoders = []
    for config in archs.text_encoders:
        with_projection = "CLIPTextModelWithProjection" in config.get("architectures", [])
        cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
        encoders.append(cls(CLIPTextConfig.from_dict(config)))
    expert = None
    if archs.expert is not None:
        from transformers import CLIPConfig

        expert = CLIPModel(CLIPConfig.from_dict(archs.expert))
    for module in [unet, vae, *encoders, expert]:
        if module is not None:
            module.requires_grad_(False).eval()
    return ModelParts(unet, vae, encoders, None, expert)
