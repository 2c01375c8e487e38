"""PNG grids of 1/2/4-step samples for fixed validation prompts, written during training.

Rows are prompts, columns are step counts. ``sample_grid_images`` samples with the LCM
multistep sampler of ``trainer.lcd`` (paper Algorithm 2) from the same initial noise in every
column, so columns differ only by the number of steps; ``save_sample_grid`` draws the labelled
grid with PIL.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from trainer.conditioning import encode_text
from trainer.lcd import lcm_sample_unet

GRID_STEPS = (1, 2, 4)
DEFAULT_W = 7.5  # LCM-form guidance; a diffusers LCM pipeline's default guidance_scale 8.5 = w + 1
_BACKGROUND = (255, 255, 255)
_INK = (20, 20, 20)


@torch.no_grad()
def sample_grid_images(
    unet: torch.nn.Module,
    teacher: Any,
    prompts: Sequence[str],
    steps: Sequence[int] = GRID_STEPS,
    w: float = DEFAULT_W,
    seed: int = 0,
) -> torch.Tensor:
    """Images (R, C, 3, H, W) in [0, 1]: one row per prompt, one column per step count.

    `teacher` provides ``vae``, ``text_encoder``, ``tokenizer``, ``alphas_cumprod`` and
    ``prediction_type`` (a ``trainer.models.TeacherParts``; SDXL also the second encoder).
    `unet` is the EMA target (or student) with the guidance embedding, or an LCM-LoRA UNet,
    which takes no w and is sampled without CFG (a pipeline's guidance_scale 1). Draws use
    their own generator: the training RNG streams are left untouched.
    """
    if not prompts:
        raise ValueError("No validation prompts given; configure at least one.")
    device = next(unet.parameters()).device
    dtype = next(unet.parameters()).dtype
    size = unet.config.sample_size
    image_size = (size * teacher.vae_scale_factor, size * teacher.vae_scale_factor)
    cond = encode_text(teacher, list(prompts)).with_time_ids(image_size).to(device, dtype)
    w_batch = None if unet.config.time_cond_proj_dim is None else torch.full(
        (len(prompts),), float(w)
    )
    shape = (len(prompts), unet.config.in_channels, size, size)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device, dtype)
    scaling = float(teacher.vae.config.scaling_factor)
    columns = []
    for num_steps in steps:
        generator = torch.Generator().manual_seed(seed + 1)
        latents = lcm_sample_unet(
            unet,
            noise,
            cond.hidden_states,
            w_batch,
            teacher.alphas_cumprod.to(device),
            num_steps=num_steps,
            prediction_type=teacher.prediction_type,
            generator=generator,
            added_cond_kwargs=cond.added,
        )
        vae_dtype = next(teacher.vae.parameters()).dtype
        decoded = teacher.vae.decode(latents.to(vae_dtype) / scaling).sample
        columns.append((decoded.float() / 2 + 0.5).clamp(0, 1).cpu())  # (R, 3, H, W)
    return torch.stack(columns, dim=1)


def _to_pil(image: torch.Tensor | Image.Image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = (image.detach().float().clamp(0, 1) * 255).round().byte()  # (3, H, W)
    return Image.fromarray(np.ascontiguousarray(array.permute(1, 2, 0).cpu().numpy()))


def _rows_of_images(images: Any) -> list[list[Image.Image]]:
    if isinstance(images, torch.Tensor):
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(
                f"images has shape {tuple(images.shape)}; expected (rows, cols, 3, H, W) in [0, 1]."
            )
    rows = [[_to_pil(img) for img in row] for row in images]
    if not rows or len({len(r) for r in rows}) != 1 or not rows[0]:
        raise ValueError("images must be a non-empty grid with the same number of columns per row.")
    return rows


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def save_sample_grid(
    images: Any,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | Path,
    cell_size: int = 128,
) -> Path:
    """Write a labelled PNG grid: `images` (R, C, 3, H, W) tensor or R lists of C PIL images.

    Each image is scaled to `cell_size` (nearest neighbour, so tiny samples stay crisp);
    column labels go on top (e.g. "1 step"), row labels (prompts, wrapped) on the left.
    """
    rows = _rows_of_images(images)
    if len(row_labels) != len(rows) or len(col_labels) != len(rows[0]):
        raise ValueError(
            f"Got {len(row_labels)} row and {len(col_labels)} column labels for a "
            f"{len(rows)}x{len(rows[0])} grid; give one label per row and per column."
        )
    font = _font(14)
    label_width, header, pad = 220, 28, 4
    width = label_width + len(col_labels) * (cell_size + pad) + pad
    height = header + len(rows) * (cell_size + pad) + pad
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for c, label in enumerate(col_labels):
        draw.text((label_width + pad + c * (cell_size + pad), 6), str(label), fill=_INK, font=font)
    for r, (row, label) in enumerate(zip(rows, row_labels, strict=True)):
        top = header + pad + r * (cell_size + pad)
        wrapped = "\n".join(textwrap.wrap(str(label), width=28)[:6])
        draw.multiline_text((pad, top + 4), wrapped, fill=_INK, font=font, spacing=2)
        for c, image in enumerate(row):
            cell = image.resize((cell_size, cell_size), Image.Resampling.NEAREST)
            canvas.paste(cell, (label_width + pad + c * (cell_size + pad), top))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return path


def step_labels(steps: Sequence[int] = GRID_STEPS) -> list[str]:
    """Column labels: "1 step", "2 steps", ..."""
    return [f"{n} step" if n == 1 else f"{n} steps" for n in steps]


def write_validation_grid(
    unet: torch.nn.Module,
    teacher: Any,
    prompts: Sequence[str],
    path: str | Path,
    steps: Sequence[int] = GRID_STEPS,
    seed: int = 0,
) -> Path:
    """Sample the validation prompts at each step count and save the labelled grid."""
    was_training = unet.training
    unet.eval()
    try:
        images = sample_grid_images(unet, teacher, prompts, steps, seed=seed)
    finally:
        unet.train(was_training)
    return save_sample_grid(images, list(prompts), step_labels(steps), path)
