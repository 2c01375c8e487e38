"""Which toy judge reads generated-looking images right? Accuracy against the renderer's truth.

    python -m orchestration.studies.gold_judge [--n 400] [--out docs/gold-judge]

Renders `--n` validation scenes (known colour, shape, size and background), then copies of
them under each condition: clean; each degradation alone (blur, pixel noise, colour shift,
warp: `rglcd.toy.distort`, `orchestration.toy_build.degrade`); a round trip through the toy
teacher's VAE (encode, decode: what every sample of a latent model goes through); and all of
them at once. Each judge reads every image; per condition and judge the share of images whose
attribute it reads as the truth, and the share with all four right. Beside them the mean
flat-region noise (`rglcd.toy.quality`) of each condition. Writes ``gold_judge.json`` and
``gold_judge.md`` to `--out`. CPU, about a minute for 400 scenes; no Ray.

The trained-on judge is the toy judge (the default recipe's expert); the held-out judge
(`rglcd.toy.heldout_judge`) shares none of its rules and no recipe trains on it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from orchestration.paths import REPO_ROOT
from orchestration.toy_build import degrade
from rglcd.toy import distort
from rglcd.toy.heldout_judge import HeldoutJudge
from rglcd.toy.judge import ATTRIBUTES, ToyJudge
from rglcd.toy.paths import TOY_PIPELINE_DIR
from rglcd.toy.quality import flat_region_noise
from rglcd.toy.scenes import render, sample_scenes

JUDGES = {"toy-judge": ToyJudge, "heldout-judge": HeldoutJudge}


def _vae_round_trip(images: torch.Tensor, pipeline_dir: Path = TOY_PIPELINE_DIR) -> torch.Tensor:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(pipeline_dir / "vae", torch_dtype=torch.float32).eval()
    with torch.no_grad():
        latents = vae.encode(images * 2 - 1).latent_dist.mean
        return ((vae.decode(latents).sample + 1) / 2).clamp(0, 1)


def conditions(clean: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """Condition name -> (N, 3, H, W) images of the same scenes."""
    def gen(k: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed * 100 + k)

    out = {
        "clean": clean,
        "blur": degrade.blur(clean, None, gen(1)),
        "noise": degrade.noise(clean, None, gen(2)),
        "colour shift": distort.colour_shift(clean, gen(3)),
        "warp": distort.warp(clean, gen(4)),
        "VAE round trip": _vae_round_trip(clean),
    }
    everything = distort.warp(distort.colour_shift(out["VAE round trip"], gen(5)), gen(6))
    out["all of them"] = degrade.noise(degrade.blur(everything, None, gen(7)), None, gen(8))
    return out


def accuracy(images: torch.Tensor, prompts: list[str]) -> dict[str, dict[str, float]]:
    """judge -> attribute (and "all") -> share of images read as the truth."""
    out = {}
    for name, judge in JUDGES.items():
        verdicts = judge().judge(images, prompts)
        right = np.array([[v["correct"][a] for a in ATTRIBUTES] for v in verdicts])  # (N, 4)
        out[name] = {a: float(right[:, i].mean()) for i, a in enumerate(ATTRIBUTES)}
        out[name]["all"] = float(right.all(axis=1).mean())
    return out


def study(n: int, seed: int = 0) -> dict:
    scenes = sample_scenes("validation", n, seed=seed)
    clean = torch.from_numpy(np.stack([render(s) for s in scenes])).permute(0, 3, 1, 2) / 255
    prompts = [s.caption for s in scenes]
    return {
        name: {"flat_noise": float(flat_region_noise(images).nanmean()),
               **accuracy(images, prompts)}
        for name, images in conditions(clean.float(), seed).items()
    }


def markdown(results: dict, n: int) -> str:
    cols = [*ATTRIBUTES, "all"]
    lines = [f"{n} validation scenes a condition; % of images read as the renderer's truth.", "",
             "| condition | flat noise (0-255) | judge | " + " | ".join(f"{c} %" for c in cols)
             + " |", "|---|---|---|" + "---|" * len(cols)]
    for condition, row in results.items():
        for judge in JUDGES:
            lines.append(f"| {condition} | {row['flat_noise']:.2f} | {judge} | "
                         + " | ".join(f"{100 * row[judge][c]:.1f}" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="scenes a condition")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "gold-judge")
    args = parser.parse_args(argv)
    if args.n < 1:
        raise SystemExit("--n must be at least 1")
    torch.manual_seed(args.seed)
    results = study(args.n, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gold_judge.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = markdown(results, args.n)
    (args.out / "gold_judge.md").write_text(table, encoding="utf-8")
    print(table)
    return results


if __name__ == "__main__":
    main()
