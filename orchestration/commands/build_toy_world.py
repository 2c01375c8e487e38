"""Rebuild every toy-world artifact from scratch: data -> mini CLIP -> VAE -> UNet -> verify.

    rglcd-build-toy-world                                   # everything
    rglcd-build-toy-world --stages clip,vae,unet
    rglcd-build-toy-world --stages reward-clip --device cuda  # docs/reward-clip
    rglcd-build-toy-world --stages verify --verify-prompts 200

(`rglcd-build-toy-world` is `python -m orchestration.commands.build_toy_world`.)

Outputs (committed, fp16 safetensors): ``rglcd/toy/artifacts/miniclip`` (transformers
CLIPModel + tokenizer), ``rglcd/toy/artifacts/pipeline`` (diffusers StableDiffusionPipeline
folder) and ``rglcd/toy/artifacts/build_report.json``; the verify stage also writes
``docs/toy_teacher_samples.png``. The data shards go to ``outputs/toy-data`` (not committed,
regenerated deterministically). Every stage is seeded; wall-time budgets stop a stage early
on a slow machine (the stop step is recorded in the report, so a budget-cut run is visible).

Departures from SD: the text encoder is the contrastively trained mini CLIP's text tower,
frozen as in SD; images are 32x32 and latents 4x8x8; see docs/toy-world.md.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields
from pathlib import Path

import torch

from orchestration.toy_build.common import BuildSettings, load_split, seed_everything
from rglcd.toy.paths import (
    TOY_ARTIFACTS,
    TOY_DATA_DIR,
    TOY_MINICLIP_DIR,
    TOY_PIPELINE_DIR,
    TOY_REPORT_FILE,
    TOY_REWARD_CLIP_DIR,
)

STAGES = ("data", "clip", "reward-clip", "vae", "unet", "verify")
# reward-clip builds a toy-clip reward CLIP that the default run does not use (the committed
# one is the expert of configs/toy-rglcd-lrm-reward-clip.yaml; docs/reward-clip): only on request.
DEFAULT_STAGES = ("data", "clip", "vae", "unet", "verify")
VAE_WORK_DIR = TOY_DATA_DIR.parent / "toy-vae"  # VAE between stages vae and unet (fp32)


def run_stage(stage: str, settings: BuildSettings, args: argparse.Namespace) -> dict:
    """Run one stage and return its report entry (outputs go to the folders in `args`)."""
    vae_dir, pipeline_dir = args.vae_dir, args.pipeline_dir
    if stage == "data":
        return {s: len(load_split(settings, s)[1]) for s in ("train", "validation", "heldout")}
    if stage == "clip":
        # deferred: loads transformers
        from orchestration.toy_build.clip_stage import train_miniclip

        report = train_miniclip(settings, TOY_MINICLIP_DIR)
        print(f"mini CLIP artifact ready at {TOY_MINICLIP_DIR}", flush=True)
        return report
    if stage == "reward-clip":
        # deferred: loads transformers
        from orchestration.toy_build.reward_clip_stage import train_reward_clip

        report = train_reward_clip(settings, TOY_MINICLIP_DIR, args.reward_clip_dir)
        print(f"toy CLIPScore reward ready at {args.reward_clip_dir}", flush=True)
        return report
    if stage == "vae":
        from orchestration.toy_build.vae_stage import train_vae  # deferred: loads diffusers

        return train_vae(settings, vae_dir)
    if stage == "unet":
        # deferred: loads diffusers, transformers
        from orchestration.toy_build.unet_stage import train_teacher

        report = train_teacher(settings, vae_dir, TOY_MINICLIP_DIR, pipeline_dir)
        print(f"toy pipeline folder ready at {pipeline_dir}", flush=True)
        return report
    # deferred: loads diffusers, torchmetrics, transformers
    from orchestration.toy_build.verify import verify_toy_world

    return verify_toy_world(settings, pipeline_dir)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", default=",".join(DEFAULT_STAGES),
                        help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--threads", type=int, default=2)
    for field in fields(BuildSettings):
        if field.type in (bool, "bool"):
            parser.add_argument("--" + field.name.replace("_", "-"), action="store_true")
        elif field.name != "data_dir":
            parser.add_argument("--" + field.name.replace("_", "-"), type=type(field.default),
                                default=field.default)
    parser.add_argument("--data-dir", type=Path, default=TOY_DATA_DIR)
    parser.add_argument("--vae-dir", type=Path, default=VAE_WORK_DIR,
                        help="fp32 VAE handed from stage vae to stage unet")
    parser.add_argument("--pipeline-dir", type=Path, default=TOY_PIPELINE_DIR,
                        help="pipeline folder written by unet and read by verify "
                             "(a staging folder keeps the committed teacher until verified)")
    parser.add_argument("--reward-clip-dir", type=Path, default=TOY_REWARD_CLIP_DIR,
                        help="folder written by stage reward-clip (the toy-clip reward)")
    parser.add_argument("--report-file", type=Path, default=TOY_REPORT_FILE)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise SystemExit(f"unknown stage(s) {unknown}; choose from {STAGES}")
    torch.set_num_threads(args.threads)
    settings = BuildSettings(**{f.name: getattr(args, f.name) for f in fields(BuildSettings)})
    TOY_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for stage in (s for s in STAGES if s in stages):
        seed_everything(settings.seed)
        start = time.monotonic()
        entry = run_stage(stage, settings, args)
        entry["seconds"] = round(time.monotonic() - start, 1)
        # Re-read so stages run in separate processes do not drop each other's entries.
        report_file = args.report_file
        report = json.loads(report_file.read_text()) if report_file.exists() else {}
        report[stage] = entry
        report_file.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"[{stage}] {json.dumps(entry, default=str)}", flush=True)


if __name__ == "__main__":
    main()
