"""Where is the 50-step toy teacher wrong? Accuracy by prompt family, by both toy judges.

    python -m orchestration.studies.headroom [--seeds 0 1] [--per-family 16] [--out docs/headroom]

Samples the committed toy teacher (DDIM 50 steps + CFG 7.5, as `rglcd-build-toy-world
--stages verify`) on every caption of the grammar (448; `--per-family N`: N random ones of
each size x shape family) at each sampling seed, reads every
image with the toy judge and the held-out judge, and reports per family of prompts (each
shape, size, size x shape, colour) the share of samples with all four attributes right and
per attribute. A family where the teacher is at most ~85% right leaves reward guidance
something to fix. Writes ``headroom.json`` and ``headroom.md``. CPU only, no Ray; a few
minutes a seed on two cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from orchestration.paths import REPO_ROOT
from orchestration.studies.gold_judge import JUDGES
from orchestration.toy_build.verify import load_teacher, sample
from rglcd.toy.judge import ATTRIBUTES
from rglcd.toy.scenes import SHAPES, SIZES, all_captions, parse_caption

COLUMNS = (*ATTRIBUTES, "all")


def families(prompts: list[str]) -> dict[str, np.ndarray]:
    """Family name -> boolean mask over `prompts`."""
    parsed = [parse_caption(p) for p in prompts]
    out = {"every prompt": np.ones(len(prompts), dtype=bool)}
    for shape in SHAPES:
        out[shape] = np.array([p["shape"] == shape for p in parsed])
    for size in SIZES:
        out[size] = np.array([p["size"] == size for p in parsed])
        for shape in SHAPES:
            out[f"{size} {shape}"] = np.array([(p["size"], p["shape"]) == (size, shape)
                                               for p in parsed])
    return out


def captions_per_family(per_family: int | None, seed: int = 0) -> list[str]:
    """Every caption, or `per_family` random ones of each (size, shape) family (56 each)."""
    captions = all_captions()
    if per_family is None:
        return captions
    rng = np.random.default_rng(seed)
    out = []
    for size in SIZES:
        for shape in SHAPES:
            family = [c for c in captions if parse_caption(c)["size"] == size
                      and parse_caption(c)["shape"] == shape]
            out += [family[i] for i in sorted(rng.permutation(len(family))[:per_family])]
    return out


def read(images, prompts: list[str]) -> dict[str, np.ndarray]:
    """judge -> (N, 5) booleans: each attribute right, then all four right."""
    out = {}
    for name, judge in JUDGES.items():
        verdicts = judge().judge(images, prompts)
        right = np.array([[v["correct"][a] for a in ATTRIBUTES] for v in verdicts])
        out[name] = np.concatenate([right, right.all(1, keepdims=True)], axis=1)
    return out


def table(rights: dict[str, np.ndarray], prompts: list[str]) -> dict:
    return {family: {"n": int(mask.sum()),
                     **{judge: dict(zip(COLUMNS, r[mask].mean(0).round(4).tolist(), strict=True))
                        for judge, r in rights.items()}}
            for family, mask in families(prompts).items()}


def markdown(result: dict, seeds: list[int], per_family: int | None = None) -> str:
    which = "every caption" if per_family is None else f"{per_family} captions of each size x shape"
    lines = [f"Toy teacher, DDIM 50 steps + CFG 7.5, {which} x sampling seeds {seeds}; "
             "% of samples read right.", "",
             "| family | n | judge | " + " | ".join(f"{c} %" for c in COLUMNS) + " |",
             "|---|---|---|" + "---|" * len(COLUMNS)]
    for family, row in result.items():
        for judge in JUDGES:
            lines.append(f"| {family} | {row['n']} | {judge} | "
                         + " | ".join(f"{100 * row[judge][c]:.1f}" for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--per-family", type=int, help="captions of each size x shape (all: 56)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "headroom")
    args = parser.parse_args(argv)
    import torch

    pipe = load_teacher()
    captions = captions_per_family(args.per_family)
    prompts = captions * len(args.seeds)
    images = torch.cat([sample(pipe, captions, 50, seed) for seed in args.seeds])
    result = table(read(images, prompts), prompts)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "headroom.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = markdown(result, args.seeds, args.per_family)
    (args.out / "headroom.md").write_text(text, encoding="utf-8")
    print(text)
    return result


if __name__ == "__main__":
    main()
