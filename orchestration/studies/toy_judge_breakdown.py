"""Where a toy model loses the toy judge's points: attribute accuracy and sub-scores.

    python -m orchestration.studies.toy_judge_breakdown outputs/table1/toy-lcd/pipeline \
        outputs/table1/toy-rglcd-lrm-toy-judge/pipeline [--steps 4 2] [--seeds 0 1 2] [--prompts 64]

Samples each exported LCM pipeline (or, with --teacher, a teacher pipeline with DDIM + CFG
7.5) exactly as `orchestration/commands/evaluate.py` does (same held-out prompts, per-item seeds and
sampler settings, so the overall score equals its table's) and prints, per model and step
count, the toy judge's accuracy of colour / shape / size / background and its semantic,
quality and overall means (`rglcd.toy.judge.ToyJudge.summary`). In-process, no Ray.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from orchestration.evaluation.prompts import load_prompts
from rglcd.toy.scenes import parse_caption


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipelines", nargs="+", help="Exported pipeline folders.")
    parser.add_argument("--teacher", action="store_true", help="Sample them as teachers.")
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--prompts", type=int, default=64, help="First N held-out prompts.")
    return parser.parse_args(argv)


def breakdown(path: str, teacher: bool, steps: int, seeds: list[int], prompts: list[str]):
    import torch

    from orchestration.evaluation.config import ModelSpec  # deferred: loads torch
    from orchestration.evaluation.generation import (  # deferred: loads diffusers, torch
        generate,
        load_pipeline,
        sample_seed,
        to_float,
    )
    from rglcd.toy.judge import ToyJudge, summarise  # deferred: loads torch

    kind = {"kind": "teacher", "sampler": "ddim"} if teacher else {"kind": "lcm"}
    spec = ModelSpec(name=Path(path).parent.name, path=path, steps=[steps], **kind)
    pipe = load_pipeline(spec)
    images = [generate(pipe, spec, steps, prompts, [sample_seed(s, i) for i in range(len(prompts))])
              for s in seeds]
    images, prompts = torch.cat([to_float(x) for x in images]), prompts * len(seeds)
    results = ToyJudge().judge(images, prompts)
    return {**summarise(results), "errors": errors(results, prompts)}


def errors(results: list[dict], prompts: list[str]) -> dict[str, int]:
    """Wrong attributes counted as "attribute wanted->detected", most frequent first."""
    from collections import Counter

    from rglcd.toy.judge import ATTRIBUTES  # deferred: loads torch

    counts = Counter(f"{a} {parse_caption(p)[a]}->{r['detected'][a]}"
                     for r, p in zip(results, prompts, strict=True)
                     for a in ATTRIBUTES if not r["correct"][a])
    return dict(counts.most_common())


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    prompts = load_prompts("toy:heldout", args.prompts).prompts
    rows = []
    for path in args.pipelines:
        for steps in args.steps:
            summary = breakdown(path, args.teacher, steps, args.seeds, prompts)
            rows.append({"pipeline": path, "steps": steps, **summary})
            print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    main()
