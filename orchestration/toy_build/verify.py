"""Stage "verify": measure the committed toy world and draw docs/toy_teacher_samples.png.

Loads the artifacts exactly as users do (``StableDiffusionPipeline.from_pretrained`` offline,
``load_miniclip``), samples held-out prompts (caption combinations never seen in training)
with DDIM + CFG 7.5 at 50, 4 and 2 steps, and scores them with the toy judge; then the mini
CLIP's held-out caption ranking, FID in mini-CLIP space and the HF-noise ratio.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline
from PIL import Image, ImageDraw

from orchestration.paths import REPO_ROOT
from orchestration.toy_build.common import BuildSettings, load_split, tensor_size_mb
from rglcd.toy.judge import ToyJudge
from rglcd.toy.metrics import hf_noise_ratio, miniclip_fid
from rglcd.toy.miniclip import caption_ranking_accuracy, load_miniclip
from rglcd.toy.paths import TOY_ARTIFACTS, TOY_MINICLIP_DIR, TOY_PIPELINE_DIR
from rglcd.toy.scenes import all_captions

GRID_PATH = REPO_ROOT / "docs" / "toy_teacher_samples.png"
STEP_COUNTS = (50, 4, 2)
GUIDANCE = 7.5


def load_teacher(pipeline_dir: Path = TOY_PIPELINE_DIR) -> StableDiffusionPipeline:
    """The toy teacher in float32 (fp16 on disk), loaded offline."""
    pipe = StableDiffusionPipeline.from_pretrained(pipeline_dir, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def sample(pipe: StableDiffusionPipeline, prompts: list[str], steps: int, seed: int,
           batch_size: int = 50) -> torch.Tensor:
    """(N, 3, 32, 32) images in [0, 1] from DDIM with `steps` steps and CFG 7.5."""
    out = []
    for i in range(0, len(prompts), batch_size):
        gen = torch.Generator().manual_seed(seed + i)
        result = pipe(prompts[i : i + batch_size], num_inference_steps=steps,
                      guidance_scale=GUIDANCE, generator=gen, output_type="pt")
        out.append(result.images.float().cpu())
    return torch.cat(out)


def draw_grid(rows: dict[str, torch.Tensor], prompts: list[str], path: Path,
              scale: int = 4) -> None:
    """One column per prompt (caption printed above), one row per step count."""
    n, cell, label_h, row_w = len(prompts), 32 * scale, 30, 70
    grid = Image.new("RGB", (row_w + n * (cell + 4), label_h + len(rows) * (cell + 4)), "white")
    draw = ImageDraw.Draw(grid)
    for j, prompt in enumerate(prompts):
        words = prompt.removeprefix("a ").removesuffix(" background").split(" on a ")
        x = row_w + j * (cell + 4)
        draw.text((x, 2), words[0], fill="black")
        draw.text((x, 14), "on " + words[-1], fill="black")
    for i, (name, images) in enumerate(rows.items()):
        y = label_h + i * (cell + 4)
        draw.text((4, y + cell // 2), name, fill="black")
        for j, image in enumerate(images[:n]):
            pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
            tile = Image.fromarray(pixels).resize((cell, cell), Image.NEAREST)
            grid.paste(tile, (row_w + j * (cell + 4), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


def teacher_report(settings: BuildSettings, prompts: list[str],
                   pipeline_dir: Path) -> tuple[dict, dict]:
    pipe = load_teacher(pipeline_dir)
    DiffusionPipeline.from_pretrained(pipeline_dir)  # the generic loader must work too
    judge, report, samples = ToyJudge(), {}, {}
    for steps in STEP_COUNTS:
        start = time.monotonic()
        samples[steps] = sample(pipe, prompts, steps, settings.seed)
        report[f"ddim{steps}_cfg{GUIDANCE}"] = {
            **judge.summary(samples[steps], prompts),
            "sampling_seconds": round(time.monotonic() - start, 1)}
    return report, samples


def verify_toy_world(settings: BuildSettings, pipeline_dir: Path = TOY_PIPELINE_DIR) -> dict:
    held_images, held_captions = load_split(settings, "heldout")
    train_images, _ = load_split(settings, "train")
    prompts = held_captions[: settings.verify_prompts]
    report, samples = teacher_report(settings, prompts, pipeline_dir)
    # A staging pipeline draws its grid beside itself, not over the committed figure.
    grid_path = GRID_PATH if pipeline_dir == TOY_PIPELINE_DIR else pipeline_dir.parent / GRID_PATH.name
    draw_grid({f"{s} steps": samples[s] for s in STEP_COUNTS}, prompts[:8], grid_path)
    model, tokenizer = load_miniclip(TOY_MINICLIP_DIR)
    report["miniclip_heldout_top1_of_448"] = caption_ranking_accuracy(
        model, tokenizer, held_images[:1000], held_captions[:1000], all_captions())
    real = train_images[:1000]
    noisy = (held_images[:1000] + 0.1 * torch.randn_like(held_images[:1000])).clamp(0, 1)
    report["fid_miniclip_vs_train"] = {
        "heldout_real": miniclip_fid(real, held_images[:1000], model),
        **{f"teacher_{s}_steps": miniclip_fid(real, samples[s], model) for s in STEP_COUNTS}}
    report["hf_noise_ratio_vs_train"] = {
        "heldout_real": hf_noise_ratio(held_images[:1000], real),
        "heldout_real_plus_noise_0.1": hf_noise_ratio(noisy, real),
        **{f"teacher_{s}_steps": hf_noise_ratio(samples[s], real) for s in STEP_COUNTS}}
    report["artifact_mb"] = {p.name: round(tensor_size_mb(p), 2)
                             for p in sorted(TOY_ARTIFACTS.iterdir()) if p.is_dir()}
    report["artifact_mb"]["total"] = round(tensor_size_mb(TOY_ARTIFACTS), 2)
    return report
