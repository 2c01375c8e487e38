"""Evaluate teachers and LCM / RG-LCM pipelines: the paper's Table 1, on any prompt file.

    rglcd-evaluate --config EVAL.yaml [key.sub=value ...]
    ray job submit --working-dir . -- python -m orchestration.commands.evaluate --config EVAL.yaml

(`rglcd-evaluate` is `python -m orchestration.commands.evaluate`.)

EVAL.yaml (schema: orchestration/evaluation/config.py `EvalConfig`; only `models` is required)::

    models:
      - {name: teacher, kind: teacher, path: rglcd/toy/artifacts/pipeline, steps: [50],
         sampler: ddim, guidance_scale: 7.5}
      - {name: rg-lcm, kind: lcm, path: outputs/toy-rglcd-toy-clip/pipeline, steps: [1, 2, 4, 8]}
    prompts: toy:heldout          # or prompts.txt (one a line) or HPSv2-style {style: [..]}.json
    seeds: [0, 1]
    scoring: {mode: service}      # or in-process; scoring.url=http://host:8000 for HTTP
    output: {dir: outputs/eval}

What it does: generates every (model, steps) row's images as Ray tasks from the same initial
noise per (prompt, seed); scores them through the reward service (deploying the configured
scorers as a temporary Serve app when none is running) or in-process; computes mean scores
(overall and per prompt group), FID against reference images, the high-frequency-noise ratio
and head-to-head win rates with 95% CIs; writes table.md, results.json, scores.jsonl,
grid_seed<s>.png (a column per table row, headed by its model and steps; a row per prompt,
numbered, the prompts listed in table.md), metrics_vs_steps.png and
images/<row>/<group>/<item>.png into `output.dir`. A model's `trained_on` lists the scorer
columns its recipe optimised: table.md marks them, so a claim can be read off a judge the
recipe did not train on (the toy world's default scorers include `heldout-judge`,
rglcd/toy/heldout_judge.py).

Departures from the paper: win rates are judged by a reward model; the paper's human
preference study (section 5) is `python -m orchestration.studies.human` on this command's images.
On the toy world FID lives in the miniature CLIP's feature space
(orchestration/evaluation/image_metrics.py), not Inception's.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from orchestration.evaluation.config import EvalConfig
from orchestration.evaluation.image_metrics import FidScorer, load_reference_images
from orchestration.evaluation.prompts import load_prompts
from orchestration.evaluation.report import (
    EvalResults,
    write_item_scores,
    write_outputs,
)
from orchestration.evaluation.scoring import make_backend
from orchestration.evaluation.summary import compute_win_rates, summarise_rows
from rglcd.configuration import load_config


def _check_models(cfg: EvalConfig) -> None:
    for spec in cfg.models:
        if not (Path(spec.path) / "model_index.json").is_file():
            raise ValueError(
                f"model {spec.name!r}: {spec.path} is not a diffusers pipeline folder (no "
                "model_index.json); export one with trainer/export.py or fix models.*.path"
            )


def _score_all(cfg: EvalConfig, images: dict, item_prompts: list[str]) -> tuple[dict, list]:
    """label -> scorer -> (N,) scores, and the error messages of missing scores."""
    from orchestration.evaluation.ray_tasks import scorer_service

    with scorer_service(cfg.scoring):
        backend = make_backend(cfg.scoring)
        try:
            scores = {
                label: {s.name: backend.score(s.name, imgs, item_prompts)
                        for s in cfg.scoring.scorers}
                for label, (imgs, _) in images.items()
            }
        finally:
            backend.close()
    return scores, [f"{msg} (x{n})" for msg, n in backend.errors.items()]


def run_evaluation(cfg: EvalConfig) -> tuple[EvalResults, dict[str, str]]:
    """Generate, score, summarise and write every output; returns the results and file paths.

    Needs a connected Ray runtime (`main` starts or joins one).
    """
    from orchestration.evaluation.ray_tasks import generate_all

    prompt_set = load_prompts(cfg.prompts, cfg.max_prompts)
    _check_models(cfg)
    reference = None
    if (cfg.fid.enabled or cfg.hf_noise.enabled) and cfg.reference.source is not None:
        reference = load_reference_images(cfg.reference)
    fid = FidScorer(cfg.fid, reference) if cfg.fid.enabled and reference is not None else None

    images = generate_all(cfg, prompt_set.prompts)
    item_prompts = prompt_set.prompts * len(cfg.seeds)
    scores, errors = _score_all(cfg, images, item_prompts)
    rows = summarise_rows(cfg, prompt_set, images, scores, fid, reference)
    win_rates, problems = compute_win_rates(cfg, scores)
    if fid is not None and len(item_prompts) <= fid.num_features:
        problems.append(
            f"FID from {len(item_prompts)} images per row <= {fid.num_features} feature "
            "dimensions: rank-deficient covariances, compare rows only loosely; add prompts/seeds"
        )
    scoring = "in-process scorers" if cfg.scoring.mode == "in-process" else (
        f"reward service {cfg.scoring.url or cfg.scoring.app_name!r}"
    )
    results = EvalResults(
        rows=rows,
        scorers=[s.name for s in cfg.scoring.scorers],
        groups=prompt_set.group_names(),
        win_rates=win_rates,
        meta={
            "num_prompts": len(prompt_set),
            "seeds": cfg.seeds,
            "scoring": scoring,
            "fid_features": cfg.fid.features if fid is not None else None,
            "reference": cfg.reference.source if reference is not None else None,
            "num_reference": 0 if reference is None else len(reference),
            "errors": errors,  # why scores are missing, with counts
            "warnings": problems,
            "config": cfg.model_dump(mode="json"),
        },
    )
    out_dir = Path(cfg.output.dir)
    item_seeds = [seed for seed in cfg.seeds for _ in prompt_set.prompts]
    files = write_outputs(
        out_dir, results, {k: v[0] for k, v in images.items()}, item_prompts, item_seeds,
        cfg.output.grid_prompts, cfg.output.grid_scale,
    )
    write_item_scores(out_dir / "scores.jsonl", scores, item_prompts,
                      prompt_set.groups * len(cfg.seeds), item_seeds)
    files["scores"] = str(out_dir / "scores.jsonl")
    if cfg.output.save_images:
        _save_images(out_dir / "images", images, prompt_set.groups * len(cfg.seeds))
    return results, files


def _save_images(folder: Path, images: dict, item_groups: list[str]) -> None:
    """images/<row>/<group>/<item:05d>.png (the HPSv2 benchmark's per-style layout)."""
    from PIL import Image

    for label, (stack, _) in images.items():
        for k, image in enumerate(stack):
            path = folder / label / item_groups[k] / f"{k:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(image)).save(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML file with an EvalConfig (models, prompts, ...)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(EvalConfig, args.config, args.overrides)
    import ray

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):  # a Ray job or a given cluster: plain init joins it
            ray.init()
        else:  # a local cluster for this run; the dashboard is not needed
            ray.init(include_dashboard=False)
    results, files = run_evaluation(cfg)
    print((Path(files["table"])).read_text(encoding="utf-8"))
    for problem in results.meta["errors"] + results.meta["warnings"]:
        print(f"warning: {problem}", file=sys.stderr)
    print("outputs:", ", ".join(files.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
