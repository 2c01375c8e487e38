"""Do the toy metrics see the symptoms they name? Renders with noise, sharper or softer edges.

    python -m orchestration.studies.symptom_metrics [--n 300] [--out docs/gold-judge]

Renders `--n` validation scenes and copies with pixel noise (std 0.02 / 0.05 / 0.1), sharper
edges (unsharp mask, amount 2), a blur, a blur then sharpened, and a blur plus noise; for
each, the flat-region noise and the HF fraction (`rglcd.toy.quality`, `rglcd.toy.metrics`),
and FID against `--n` train renders in random-conv feature space. Writes
``symptom_metrics.json`` and ``symptom_metrics.md``. CPU, under a minute; no Ray.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from orchestration.paths import REPO_ROOT
from orchestration.toy_build.degrade import blur
from rglcd.toy.metrics import high_frequency_fraction
from rglcd.toy.quality import flat_region_noise, random_conv_fid
from rglcd.toy.scenes import render, sample_scenes


def _renders(split: str, n: int) -> torch.Tensor:
    images = np.stack([render(s) for s in sample_scenes(split, n, seed=0)])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def variants(clean: torch.Tensor) -> dict[str, torch.Tensor]:
    def noisy(x, std):
        return (x + std * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)

    def sharpen(x):
        return (x + 2.0 * (x - blur(x, None, torch.Generator().manual_seed(1)))).clamp(0, 1)

    soft = blur(clean, None, torch.Generator().manual_seed(2))
    return {"clean": clean, "noise 0.02": noisy(clean, 0.02), "noise 0.05": noisy(clean, 0.05),
            "noise 0.1": noisy(clean, 0.1), "sharper edges": sharpen(clean), "blur": soft,
            "blur, then sharper": sharpen(soft), "blur + noise 0.02": noisy(soft, 0.02)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "gold-judge")
    args = parser.parse_args(argv)
    real = _renders("train", args.n)
    result = {name: {"flat_noise": float(flat_region_noise(x).nanmean()),
                     "hf_fraction": float(high_frequency_fraction(x).mean()),
                     "random_conv_fid": random_conv_fid(real, x)}
              for name, x in variants(_renders("validation", args.n)).items()}
    lines = [f"{args.n} validation renders a row; FID against {args.n} train renders.", "",
             "| images | flat noise (0-255) | HF fraction | FID (random-conv) |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['flat_noise']:.2f} | {v['hf_fraction']:.3f} | {v['random_conv_fid']:.2f} |"
              for k, v in result.items()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "symptom_metrics.json").write_text(json.dumps(result, indent=2) + "\n",
                                                   encoding="utf-8")
    (args.out / "symptom_metrics.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
