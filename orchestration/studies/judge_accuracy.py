"""Attribute accuracy of an evaluation's saved samples by the toy judge and the held-out judge.

    python -m orchestration.studies.judge_accuracy outputs/eval-teacher-heldout [--out FILE.md]

For each row of the evaluation (its saved images and prompts, from scores.jsonl):
the share of samples whose colour, shape, size and background each judge reads as the
caption says. The toy judge is the expert the default recipe trains on; the held-out judge
(rglcd/toy/heldout_judge.py) shares none of its rules, so a gain seen by both is not an
artefact of the reward that was optimised. Runs in this process on the CPU (no Ray).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from orchestration.studies.human.create import image_path, read_eval_records
from rglcd.toy.heldout_judge import ATTRIBUTES, HeldoutJudge
from rglcd.toy.judge import ToyJudge
from rglcd.toy.scenes import IMAGE_SIZE


def row_accuracy(eval_dir: Path) -> dict[str, dict[str, dict[str, float]]]:
    """row -> judge -> attribute -> share of samples read right (toy-size images)."""
    out = {}
    for row, records in read_eval_records(eval_dir).items():
        items = [records[k] for k in sorted(records)]
        pictures = [Image.open(image_path(eval_dir, r)).convert("RGB") for r in items]
        pixels = np.stack([np.asarray(p.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))
                           for p in pictures])
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
        prompts = [r["prompt"] for r in items]
        out[row] = {
            name: {a: float(np.mean([v["correct"][a] for v in judge.judge(images, prompts)]))
                   for a in ATTRIBUTES}
            for name, judge in (("toy-judge", ToyJudge()), ("heldout-judge", HeldoutJudge()))
        }
    return out


def markdown(accuracy: dict) -> str:
    head = "| row | judge | " + " | ".join(f"{a} %" for a in ATTRIBUTES) + " |"
    lines = [head, "|---|---|" + "---|" * len(ATTRIBUTES)]
    for row, judges in accuracy.items():
        for judge, acc in judges.items():
            lines.append(f"| {row} | {judge} | "
                         + " | ".join(f"{100 * acc[a]:.1f}" for a in ATTRIBUTES) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_dir", help="output.dir of orchestration/commands/evaluate.py")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    try:
        text = markdown(row_accuracy(Path(args.eval_dir)))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
