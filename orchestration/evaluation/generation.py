"""Sampling images from a teacher or an LCM pipeline with shared initial noise (no Ray here).

Every model sees the same initial latent for the same (seed, prompt index): the noise is
drawn here from a generator seeded by that pair, not by the pipeline, so rows of the table
and columns of the grids differ only by the model. An LCM pipeline's re-noising between steps
(Algorithm 2) draws from a generator seeded the same way.

- teacher (``StableDiffusionPipeline`` folder): DDIM or DPM-Solver++ (2nd order multistep) at
  K steps with classifier-free guidance scale g (2 UNet calls per step);
- LCM (``LatentConsistencyModelPipeline`` folder, e.g. from trainer/run_outputs/export.py):
  1-8 steps, ``guidance_scale`` = w + 1 fed as the UNet's guidance embedding, 1 UNet call per
  step;
- LCM-LoRA (an SD/SDXL pipeline with the adapters fused in, or the teacher plus its adapter
  folder): the LCM scheduler at 1-8 steps, ``guidance_scale`` 1 (no CFG) by default.

No pipeline keeps a safety checker: teacher and students run the same components.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    LCMScheduler,
)

from orchestration.evaluation.config import ModelSpec
from rglcd import storage

_CACHE: OrderedDict[tuple[str, str, str], DiffusionPipeline] = OrderedDict()
_CACHE_SIZE = 3  # pipelines kept per process (a Ray worker serves many tasks)


def sample_seed(seed: int, prompt_index: int) -> int:
    """The generator seed of one (seed, prompt) item; the same for every model."""
    return (seed * 1_000_003 + prompt_index) % (2**63 - 1)


def _same_components(folder: str) -> dict:
    """from_pretrained arguments that leave out an SD pipeline's safety checker: teachers and
    students are compared with the same components (the exported LCMs have none)."""
    index = json.loads(Path(folder, "model_index.json").read_text(encoding="utf-8"))
    if "safety_checker" not in index:
        return {}
    return {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}


def load_pipeline(spec: ModelSpec, device: str = "cpu") -> DiffusionPipeline:
    """Load `spec.path` offline and set the sampler it is evaluated with (cached per process)."""
    key = (spec.path, spec.adapters, spec.sampler if spec.kind == "teacher" else spec.kind, device)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    # Weights keep their stored dtype unless told; fp16 (the committed toy teacher) cannot
    # run on a CPU, so CPU evaluation loads float32.
    dtype = torch.float32 if device == "cpu" else None
    folder = storage.local_copy(spec.path)  # a URI: one download per node
    pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True, dtype=dtype,
                                             **_same_components(folder))
    # diffusers' own path, as trainer/run_outputs/export.py fuses them
    if spec.adapters is not None:
        pipe.load_lora_weights(storage.local_copy(spec.adapters))
        pipe.fuse_lora()
        pipe.unload_lora_weights()
    _set_scheduler(pipe, spec)
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    _CACHE[key] = pipe
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return pipe


def _set_scheduler(pipe: DiffusionPipeline, spec: ModelSpec) -> None:
    config = pipe.scheduler.config
    embedding = getattr(pipe.unet.config, "time_cond_proj_dim", None)
    if spec.kind == "lcm" and embedding is None:
        raise ValueError(
            f"model {spec.name!r} ({spec.path}) has no guidance-embedding UNet "
            "(time_cond_proj_dim is None); use kind=lcm-lora for a fused LCM-LoRA pipeline "
            "or kind=teacher for a plain SD pipeline"
        )
    if spec.kind == "lcm-lora" and embedding is not None:
        raise ValueError(
            f"model {spec.name!r} ({spec.path}) has a guidance-embedding UNet: use kind=lcm"
        )
    if spec.kind != "teacher":
        if not isinstance(pipe.scheduler, LCMScheduler):
            pipe.scheduler = LCMScheduler.from_config(config)
    elif spec.sampler == "ddim":
        pipe.scheduler = DDIMScheduler.from_config(config)
    else:
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", solver_order=2
        )


def latent_shape(pipe: DiffusionPipeline) -> tuple[int, int, int]:
    """(C, h, w) of the pipeline's latents at its default resolution."""
    size = pipe.unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return pipe.unet.config.in_channels, h, w


def initial_latents(shape: tuple[int, int, int], seeds: list[int]) -> torch.Tensor:
    """(B, C, h, w) standard normal latents, item i drawn from a generator seeded seeds[i]."""
    return torch.stack(
        [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
    )


@torch.no_grad()
def generate(
    pipe: DiffusionPipeline, spec: ModelSpec, steps: int, prompts: list[str], seeds: list[int]
) -> np.ndarray:
    """(B, H, W, 3) uint8 images for `prompts`, item i from initial noise seeded seeds[i]."""
    return to_uint8(sample(pipe, spec, steps, prompts, seeds, "pt"))  # (B, 3, H, W) in [0, 1]


@torch.no_grad()
def sample(
    pipe: DiffusionPipeline, spec: ModelSpec, steps: int, prompts: list[str], seeds: list[int],
    output_type: str,
) -> torch.Tensor:
    """The pipeline's output for `prompts` ("pt": images in [0, 1]; "latent": final latents),
    item i from initial noise seeded seeds[i]."""
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
    device = pipe.unet.device
    latents = initial_latents(latent_shape(pipe), seeds).to(device, pipe.unet.dtype)
    # Re-noising of multistep LCM sampling: one generator per item, so batching changes nothing.
    generators = [torch.Generator().manual_seed(s + 1) for s in seeds]
    return pipe(
        prompt=list(prompts),
        num_inference_steps=steps,
        guidance_scale=spec.guidance,
        latents=latents,
        generator=generators,
        output_type=output_type,
    ).images


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [0, 1] -> (B, H, W, 3) uint8, rounding to nearest."""
    array = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return array.permute(0, 2, 3, 1).cpu().numpy()


def to_float(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
