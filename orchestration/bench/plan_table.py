"""The capacity plan of the SD 1.5 / 2.1 / XL recipes as one markdown table (docs/results.md).

    python -m orchestration.bench.plan_table [--utilisation 0.4] [RECIPE ...]

One `rglcd-plan` per recipe (configs/<name>.yaml), per train GPU: memory on an 80 GB card and
whether the recipe fits an A100 40 GB / A100 80 GB / H100 80 GB, the largest per-GPU batch on
each, FLOPs per step and the step time at the stated utilisation of the dense bf16 peak.
A few minutes on one CPU core (fake tensors: no memory).
"""

from __future__ import annotations

import argparse

from orchestration.capacity.plan import GIB, GPUS, plan_recipe
from orchestration.capacity.services import colocated_replicas
from orchestration.paths import REPO_ROOT
from trainer.config import load_trainer_config

RECIPES = (
    "sd15-lcd", "sd15-rglcd-hpsv2.1", "sd15-rglcd-lrm-hpsv2.1",
    "sd21-lcd", "sd21-rglcd-lrm-hpsv2.1",
    "sd21v-lcd", "sd21v-rglcd-lrm-hpsv2.1",
    "sdxl-lcd-lora", "sdxl-rglcd-lora-hpsv2.1",
)
HEADER = (
    "| recipe | px, batch/GPU | trainable params | weights + optimizer + DDP (GiB) | "
    "step peak (GiB) | co-located replica (GiB) | total (GiB) | fits 40 / 80 / H100 | "
    "largest batch 40 / 80 / H100 | TFLOP/step | step s A100 / H100 |"
)


def row(name: str, utilisation: float) -> str:
    cfg = load_trainer_config(REPO_ROOT / "configs" / f"{name}.yaml", check_paths=False)
    plan = plan_recipe(cfg, recipe=name)
    plan.services = colocated_replicas(cfg)
    gpus = [GPUS["a100-40"], GPUS["a100-80"], GPUS["h100-80"]]
    fits = " / ".join("yes" if plan.fits(g) else "**no**" for g in gpus)
    largest = " / ".join(str(plan.largest_batch(g)) for g in gpus)
    seconds = " / ".join(f"{plan.step_seconds(g, utilisation):.2f}" for g in gpus[1:])
    extras = " ".join(k for k, on in (("ckpt", cfg.model.gradient_checkpointing),
                                       ("LoRA", cfg.model.lora is not None)) if on)
    return (f"| {name}{f' ({extras})' if extras else ''} | {plan.resolution}, {plan.batch} | "
            f"{plan.trainable_params / 1e6:.0f} M | {plan.static_bytes / GIB:.1f} | "
            f"{plan.step_bytes / GIB:.1f} | {sum(plan.services.values()) / GIB:.1f} | "
            f"{plan.total_bytes / GIB:.1f} | {fits} | {largest} | "
            f"{plan.step.flops / 1e12:.1f} | {seconds} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--utilisation", type=float, default=0.4)
    parser.add_argument("recipes", nargs="*", default=list(RECIPES))
    args = parser.parse_args(argv)
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    for name in args.recipes:
        print(row(name, args.utilisation), flush=True)


if __name__ == "__main__":
    main()
