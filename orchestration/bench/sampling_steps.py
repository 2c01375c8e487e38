"""Sampling speed: the teacher at 50 DDIM steps with CFG vs an LCM pipeline at 1/2/4 steps.

    python -m orchestration.bench.sampling_steps                 # toy teacher, no LCM
    python -m orchestration.bench.sampling_steps --lcm outputs/toy-rglcd-toy-clip/pipeline
    python -m orchestration.bench.sampling_steps --teacher PATH --lcm PATH --batch-size 8 \
        --threads 4

Same batch size, same prompts and same initial noise for every configuration; each is warmed
up once (pipeline load, first-call allocations) and then timed over one run. Prints wall time
per image and the ratio teacher-50 / each few-step configuration. Without `--lcm`, the
few-step rows are the teacher itself at 1/2/4 DDIM steps with CFG (a speed baseline only: its
samples are poor, which is what distillation fixes); the output says which was measured.
The paper counts NFE (50 vs 2 steps = 25x); wall time also pays for the text encoder, the VAE
decode and CFG's doubled batch, so it differs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from orchestration.evaluation.config import ModelSpec
from orchestration.evaluation.generation import generate, load_pipeline, sample_seed
from rglcd.toy.paths import TOY_PIPELINE_DIR
from rglcd.toy.scenes import sample_scenes


def time_per_image(spec: ModelSpec, steps: int, prompts: list[str], device: str) -> float:
    """Seconds per image of one timed run, after a one-step warm-up on the same batch."""
    pipe = load_pipeline(spec, device)
    seeds = [sample_seed(0, i) for i in range(len(prompts))]
    generate(pipe, spec, 1, prompts, seeds)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    generate(pipe, spec, steps, prompts, seeds)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / len(prompts)


def run(args: argparse.Namespace) -> list[tuple[str, int, float]]:
    prompts = [s.caption for s in sample_scenes("heldout", args.batch_size, seed=0)]
    if args.prompt:
        prompts = [args.prompt] * args.batch_size
    teacher = ModelSpec(name="teacher", kind="teacher", path=str(args.teacher),
                        sampler="ddim", guidance_scale=args.guidance)
    few = (ModelSpec(name="lcm", kind="lcm", path=str(args.lcm)) if args.lcm
           else teacher.model_copy(update={"name": "teacher-few-steps"}))
    rows = [("teacher", args.teacher_steps, time_per_image(teacher, args.teacher_steps, prompts,
                                                           args.device))]
    for steps in args.steps:
        rows.append((few.name, steps, time_per_image(few, steps, prompts, args.device)))
    return rows


def report(rows: list[tuple[str, int, float]], args: argparse.Namespace) -> str:
    base = rows[0][2]
    what = (f"LCM pipeline {args.lcm}" if args.lcm
            else "the teacher itself at few DDIM steps with CFG (no LCM given)")
    lines = [
        f"batch size {args.batch_size}, device {args.device}, torch threads "
        f"{torch.get_num_threads()}; few-step rows: {what}",
        f"| model | steps | s / image | teacher-{rows[0][1]} / this |",
        "|---|---|---|---|",
    ]
    for name, steps, seconds in rows:
        lines.append(f"| {name} | {steps} | {seconds:.4f} | {base / seconds:.1f}x |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, default=TOY_PIPELINE_DIR)
    parser.add_argument("--lcm", type=Path, default=None, help="exported LCM pipeline folder")
    parser.add_argument("--teacher-steps", type=int, default=50)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--guidance", type=float, default=7.5, help="teacher CFG scale")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--prompt", default=None, help="one prompt for the whole batch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    for path in (args.teacher, args.lcm):
        if path is not None and not (path / "model_index.json").is_file():
            parser.error(f"{path} is not a diffusers pipeline folder (no model_index.json)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(report(run(args), args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
