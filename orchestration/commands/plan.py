"""Capacity plan of a recipe: what one train GPU holds, the step's FLOPs and time, or why not.

    rglcd-plan --config configs/sd15-rglcd-lrm-hpsv2.1.yaml [--gpu a100-80] [--utilisation 0.4]
    python -m orchestration.commands.plan --config configs/sdxl-rglcd-lora-hpsv2.1.yaml --gpu h100-80

Builds the recipe's real architectures from committed config JSON (rglcd/arch_configs; no
weights, nothing downloaded) on fake tensors, runs one training step at the recipe's
resolution and per-worker batch, and prints per GPU: parameters, weights, gradients and
optimizer state (in the dtypes the trainer uses), the step's activations (measured op by op),
a co-located reward-service replica, FLOPs per step (torch's flop counter), the step time at
the stated utilisation, and the largest per-GPU batch that fits. A recipe that does not fit
exits with status 1 and the options that make it fit. Method: orchestration/capacity/plan.py.
Takes about a minute per SD-sized recipe on one CPU core.
"""

from __future__ import annotations

import argparse
import sys

from orchestration.capacity.plan import GPU, GPUS, CapacityPlan, describe, gib, plan_recipe
from orchestration.capacity.services import colocated_replicas
from rglcd.configuration import ConfigError
from trainer.config import RGLCDConfig, load_trainer_config


def fit_options(plan: CapacityPlan, cfg: RGLCDConfig, gpu: GPU) -> list[str]:
    """What would make a recipe that does not fit fit."""
    options = []
    if not cfg.model.gradient_checkpointing:
        options.append("model.gradient_checkpointing=true (recompute the student's activations)")
    if cfg.lcd.optimizer == "adamw":
        saved = plan.lines["optimizer state"] * 3 // 4
        options.append(f"lcd.optimizer=adamw8bit (saves {gib(saved)} GiB; needs bitsandbytes)")
    batch = plan.largest_batch(gpu)
    if batch >= 1:
        options.append(f"a per-GPU batch of {batch}: lcd.global_batch_size="
                       f"{batch * max(cfg.scaling.num_workers, 1)} (the largest that fits)")
    return options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="Trainer recipe (YAML).")
    parser.add_argument("--gpu", choices=sorted(GPUS), default="a100-80")
    parser.add_argument("--utilisation", type=float, default=0.4,
                        help="Fraction of the dense bf16 peak the step reaches (default 0.4).")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides of the recipe.")
    args = parser.parse_args(argv)
    try:
        cfg = load_trainer_config(args.config, args.overrides, check_paths=False)
        plan = plan_recipe(cfg, recipe=args.config)
    except (ConfigError, ValueError) as err:
        print(f"rglcd-plan: {err}", file=sys.stderr)
        return 2
    plan.services = colocated_replicas(cfg)
    gpu = GPUS[args.gpu]
    print(describe(plan, gpu, args.utilisation))
    if plan.fits(gpu):
        return 0
    print(f"rglcd-plan: {args.config} needs {gib(plan.total_bytes)} GiB per GPU but a {gpu.name} "
          f"has {gib(gpu.usable_bytes)} GiB usable. Options:", file=sys.stderr)
    for option in fit_options(plan, cfg, gpu):
        print(f"  - {option}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
