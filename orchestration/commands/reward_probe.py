"""Does a differentiable reward's gradient point where the expert agrees? A cheap check
before an RG-LCD run with the direct reward (paper eq. 10-11).

    rglcd-reward-probe --pipeline outputs/toy-lcd/pipeline \\
        --reward mini=rglcd/toy/artifacts/miniclip --reward robust=outputs/reward-clip/rc-0.25

(`rglcd-reward-probe` is `python -m orchestration.commands.reward_probe`.)

It samples the model's `--steps`-step latents for the held-out toy prompts, then, for each
reward, takes `--iters` normalised gradient-ascent steps on those latents through the VAE
decoder (the path the student's reward gradient takes) and judges the decoded images with the
toy judge every `--every` steps. A reward whose ascent lowers the judge's score would, at
beta > 0, pull the student away from what the expert prefers: the probe shows that in a
minute instead of a training run. A second table (`--negatives N`, default 1000; 0 skips it)
gives, for the first N scenes of the held-out split, how often each reward scores the true
picture above each of its hard negatives (a degraded copy, the scene with its shape, size or
colour changed; orchestration/toy_build/reward_clip_stage.py), the static side of the same
question. A third (`--size-sweep N`, default 150; 0 skips it) redraws N held-out scenes of each
size at every object width from 9 to 23 px and gives each reward's mean score for the true
caption, relative to the scene's own width: how steeply the score falls as a small object
grows past the judge's size threshold (15 px). `--pipeline` may be left out to print only the
static tables. `--json` also writes the figures.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from orchestration.evaluation.config import ModelSpec
from orchestration.evaluation.generation import load_pipeline, sample, sample_seed
from orchestration.evaluation.prompts import load_prompts
from reward_service.scorers.toy import ToyJudgeScorer, toy_clip_scorer
from rglcd.toy.paths import TOY_DATA_DIR
from rglcd.toy.scenes import SIZE_RANGES, SIZES, in_frame, render, sample_scenes
from trainer.reward.hooks import DirectReward


def ascent_step(latents: torch.Tensor, grad: torch.Tensor, step_size: float) -> torch.Tensor:
    """One normalised ascent step per item: each item moves `step_size` in RMS latent units."""
    rms = grad.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12).view(-1, 1, 1, 1)
    return latents + step_size * grad / rms


def probe(pipe, scorer, prompts: list[str], start: torch.Tensor, iters: int, every: int,
          step_size: float) -> list[dict]:
    """Judge figures at 0, every, 2*every, ... ascent steps of `scorer` from `start`.

    Images come from the direct reward hook's own decode, so the gradient takes the student's
    path (trainer.task.DirectReward)."""
    hook, judge = DirectReward(scorer, pipe.vae, beta=1.0), ToyJudgeScorer().judge
    latents, rows = start.clone(), []
    for it in range(iters + 1):
        latents.requires_grad_(True)
        images = hook.decode(latents)
        reward = scorer(images, prompts)
        if it % every == 0:
            rows.append({"step": it, "reward": round(reward.mean().item(), 4),
                         **judge.summary(images.detach(), prompts)})
        if it == iters:
            break
        (grad,) = torch.autograd.grad(reward.sum(), latents)
        latents = ascent_step(latents.detach(), grad, step_size)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline", help="an exported LCM pipeline folder (the ascent table; "
                        "without it only the static tables are printed)")
    parser.add_argument("--reward", action="append", required=True, metavar="NAME=DIR",
                        help="a toy-clip style CLIP folder to probe (repeatable)")
    parser.add_argument("--steps", type=int, default=2, help="sampling steps of the start")
    parser.add_argument("--prompts", default="toy:heldout")
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--step-size", type=float, default=0.02,
                        help="RMS latent change per ascent step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--negatives", type=int, default=1000,
                        help="held-out scenes for the hard-negative ranking table (0: skip)")
    parser.add_argument("--size-sweep", type=int, default=150,
                        help="held-out scenes of each size for the width sweep (0 skips it)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rewards = dict(item.split("=", 1) for item in args.reward)
    results = ascent_table(args, rewards) if args.pipeline else {}
    ranking = negative_ranking(rewards, args.negatives) if args.negatives > 0 else {}
    sweep = size_sweep_table(rewards, args.size_sweep) if args.size_sweep > 0 else {}
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results, "ranking": ranking,
                                         "size_sweep": sweep}, indent=2) + "\n")


def ascent_table(args: argparse.Namespace, rewards: dict[str, str]) -> dict[str, list[dict]]:
    """The gradient-ascent table: judge figures every `--every` steps up each reward."""
    spec = ModelSpec(name="start", path=args.pipeline, kind="lcm", steps=[args.steps])
    pipe = load_pipeline(spec)
    pipe.vae.requires_grad_(False)
    prompts = load_prompts(args.prompts).prompts
    seeds = [sample_seed(args.seed, i) for i in range(len(prompts))]
    start = sample(pipe, spec, args.steps, prompts, seeds, "latent")  # final (denoised) latents
    results = {}
    print("| reward | ascent steps | reward mean | judge overall | semantic | quality | colour | "
          "shape | size | background |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, directory in rewards.items():
        scorer = toy_clip_scorer(name, directory, device="cpu")
        results[name] = probe(pipe, scorer, prompts, start, args.iters, args.every,
                              args.step_size)
        for row in results[name]:
            print(f"| {name} | {row['step']} | {row['reward']:.4f} | {row['overall']:.3f} | "
                  f"{row['semantic']:.3f} | {row['quality']:.3f} | {row['colour_accuracy']:.3f} | "
                  f"{row['shape_accuracy']:.3f} | {row['size_accuracy']:.3f} | "
                  f"{row['bg_accuracy']:.3f} |", flush=True)
    return results


def negative_ranking(rewards: dict[str, str], n: int) -> dict[str, dict[str, float]]:
    """Per reward: the fraction of held-out scenes it scores above each kind of hard negative."""
    from orchestration.toy_build.common import BuildSettings, load_split  # deferred: loads pyarrow
    from orchestration.toy_build.reward_clip_stage import (  # deferred: loads pyarrow, transformers
        held_out_negatives,
        true_over,
    )
    from rglcd.toy.miniclip import load_miniclip  # deferred: loads transformers

    images, captions = load_split(BuildSettings(data_dir=TOY_DATA_DIR), "heldout")
    images, captions = images[:n], captions[:n]
    negatives = held_out_negatives(images, captions, seed=0)
    ranking = {}
    print(f"\n| reward | true picture over: {' | '.join(negatives)} |")
    print("|---|" + "---|" * len(negatives))
    for name, directory in rewards.items():
        model, tokenizer = load_miniclip(directory)
        ranking[name] = {kind: round(v, 3) for kind, v in
                         true_over(model, tokenizer, images, negatives, captions).items()}
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in ranking[name].values()) + " |",
              flush=True)
    return ranking


SWEEP_WIDTHS = tuple(range(9, 24))  # both sizes' training ranges (9-13, 17-23) and the gap


def width_sweep(scorer, scenes: list, widths=SWEEP_WIDTHS) -> dict[int, float]:
    """Mean score of each scene's own caption with its object redrawn at every width.

    The centre moves just enough to keep the object in frame; nothing else changes.
    """
    import numpy as np

    captions, means = [scene.caption for scene in scenes], {}
    for width in widths:
        drawn = [_redrawn(scene, width) for scene in scenes]
        images = torch.from_numpy(np.stack(drawn)).float().div(255).permute(0, 3, 1, 2)
        with torch.no_grad():
            means[width] = scorer(images, captions).float().mean().item()
    return means


def _redrawn(scene, width: int):
    """The scene's picture with its object at `width`, centre kept in frame."""
    x, y = in_frame(scene.x, scene.y, width)
    return render(replace(scene, width=width, x=x, y=y))


def size_sweep_table(rewards: dict[str, str], n: int) -> dict[str, dict[str, dict[int, float]]]:
    """Per reward and size: mean score change by width, relative to the size's middle width."""
    scenes = sample_scenes("heldout", 4 * n, seed=1)
    by_size = {size: [s for s in scenes if s.size == size][:n] for size in SIZES}
    print(f"\n| reward | caption size | score change at width {' / '.join(map(str, SWEEP_WIDTHS))} "
          "px (vs the middle of the size's range) |")
    print("|---|---|---|")
    sweep = {}
    for name, directory in rewards.items():
        scorer, sweep[name] = toy_clip_scorer(name, directory, device="cpu"), {}
        for size, chosen in by_size.items():
            means = width_sweep(scorer, chosen)
            middle = means[sum(SIZE_RANGES[size]) // 2]
            sweep[name][size] = {w: round(v - middle, 4) for w, v in means.items()}
            print(f"| {name} | {size} ({len(chosen)}) | "
                  + " / ".join(f"{v:+.3f}" for v in sweep[name][size].values()) + " |", flush=True)
    return sweep


if __name__ == "__main__":
    main()
