"""One evaluation from its typed config: generate every (model, steps) row's images as Ray
tasks, score them, summarise and write every output (`rglcd-evaluate` and the studies run it).
"""

from __future__ import annotations

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


def _check_models(cfg: EvalConfig) -> None:
    for spec in cfg.models:
        if not (Path(spec.path) / "model_index.json").is_file():
            raise ValueError(
                f"model {spec.name!r}: {spec.path} is not a diffusers pipeline folder (no "
                "model_index.json); export one with trainer/export.py or fix models.*.path"
            )


def _score_all(cfg: EvalConfig, images: dict, item_prompts: list[str]) -> tuple[dict, list]:
    """label -> scorer -> (N,) scores, and the error messages of missing scores."""
    from orchestration.evaluation.ray_tasks import scorer_service  # deferred: loads ray

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
    from orchestration.evaluation.ray_tasks import generate_all  # deferred: loads ray

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
        save_images(out_dir / "images", images, prompt_set.groups * len(cfg.seeds))
    return results, files


def save_images(folder: Path, images: dict, item_groups: list[str]) -> None:
    """images/<row>/<group>/<item:05d>.png (the HPSv2 benchmark's per-style layout)."""
    from PIL import Image

    for label, (stack, _) in images.items():
        for k, image in enumerate(stack):
            path = folder / label / item_groups[k] / f"{k:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(image)).save(path)
