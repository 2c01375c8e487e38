"""One evaluation from its typed config: generate every (model, steps) row's images on
generation actors and stream them (written as made, scored, folded into per-row figures),
summarise and write every output (`rglcd-evaluate` and the studies run it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from orchestration.evaluation.accumulate import RowAccumulator, grid_item_indices
from orchestration.evaluation.config import EvalConfig, row_label
from orchestration.evaluation.image_metrics import num_features, reference_chunks, reference_size
from orchestration.evaluation.items import image_name, make_items
from orchestration.evaluation.prompts import load_prompts
from orchestration.evaluation.report import (
    EvalResults,
    write_item_scores,
    write_outputs,
)
from orchestration.evaluation.scoring import make_backend
from orchestration.evaluation.summary import (
    compute_win_rates,
    reference_flat_noise,
    summarise_rows,
)
from rglcd import storage


def _check_models(cfg: EvalConfig) -> None:
    for spec in cfg.models:
        if not storage.is_file(storage.join(spec.path, "model_index.json")):
            raise ValueError(
                f"model {spec.name!r}: {spec.path} is not a diffusers pipeline folder (no "
                "model_index.json); export one with trainer/run_outputs/export.py or fix "
                "models.*.path"
            )


def _absolute(cfg: EvalConfig) -> EvalConfig:
    """Local locations the actors read made absolute here, where they were given (an actor
    may run in another working directory); URIs and toy sources stay as they are."""
    def fix(location: str | None) -> str | None:
        if location is None or location.startswith("toy:") or not storage.is_local(location):
            return location
        return storage.local_path(location)

    models = [m.model_copy(update={"path": fix(m.path), "adapters": fix(m.adapters)})
              for m in cfg.models]
    return cfg.model_copy(update={
        "models": models,
        "output": cfg.output.model_copy(update={"dir": fix(cfg.output.dir)}),
        "reference": cfg.reference.model_copy(update={"source": fix(cfg.reference.source)}),
        "fid": cfg.fid.model_copy(update={"miniclip_dir": fix(cfg.fid.miniclip_dir),
                                          "inception_weights": fix(cfg.fid.inception_weights)}),
    })


def _jobs(cfg: EvalConfig, items: list, reference: bool) -> list[tuple]:
    """The reference set's chunks, then every row's, in table order."""
    size = cfg.generation.batch_size
    jobs = [("reference", a, b) for a, b in reference_chunks(cfg.reference, size)] \
        if reference else []
    for spec, steps in cfg.rows():
        spec_data = spec.model_dump()
        jobs += [("generate", spec_data, steps, row_label(spec.name, steps), items[i : i + size])
                 for i in range(0, len(items), size)]
    return jobs


def _stream(cfg: EvalConfig, items: list, reference_size) -> tuple[dict, RowAccumulator, list]:
    """Generate and score chunk by chunk: (row label -> accumulator, reference, errors)."""
    from orchestration.evaluation.ray_tasks import (  # deferred: loads ray
        scorer_service,
        stream_chunks,
    )

    scorers = [s.name for s in cfg.scoring.scorers]
    grid = grid_item_indices(items, len(cfg.seeds), cfg.output.grid_prompts)
    rows = {label: RowAccumulator(len(items), scorers, grid) for label in cfg.row_labels()}
    reference = RowAccumulator(0, [], set())
    jobs = _jobs(cfg, items, reference_size is not None)
    with scorer_service(cfg.scoring):
        backend = make_backend(cfg.scoring)
        try:
            for done, chunk in enumerate(stream_chunks(cfg, jobs, reference_size), start=1):
                if chunk.row is None:
                    reference.add([], None, {}, chunk.figures)
                    continue
                prompts = [item.prompt for item in chunk.items]
                scores = {s: backend.score(s, chunk.images, prompts) for s in scorers}
                rows[chunk.row].add(chunk.items, chunk.images, scores, chunk.figures,
                                    chunk.seconds)
                print(f"\revaluate: {done}/{len(jobs)} chunks", end="", file=sys.stderr,
                      flush=True)
        finally:
            backend.close()
    print(file=sys.stderr)
    return rows, reference, [f"{msg} (x{n})" for msg, n in backend.errors.items()]


def run_evaluation(cfg: EvalConfig) -> tuple[EvalResults, dict[str, str]]:
    """Generate, score, summarise and write every output; returns the results and file paths.

    Images stream: each chunk is written to `output.dir`, scored and folded into its row's
    figures as it arrives, then dropped. Needs a connected Ray runtime (`main` starts or
    joins one).
    """
    cfg = _absolute(cfg)
    prompt_set = load_prompts(cfg.prompts, cfg.max_prompts)
    _check_models(cfg)
    items = make_items(prompt_set, cfg.seeds)
    size = None
    if (cfg.fid.enabled or cfg.hf_noise.enabled or cfg.flat_noise.enabled) \
            and cfg.reference.source is not None:
        size = reference_size(cfg.reference)
    rows, reference, errors = _stream(cfg, items, size)
    summaries = summarise_rows(cfg, prompt_set, rows, reference if size else None)
    scores = {label: acc.scores for label, acc in rows.items()}
    win_rates, problems = compute_win_rates(cfg, scores)
    fid_on = size is not None and cfg.fid.enabled
    if fid_on and len(items) <= num_features(cfg.fid):
        problems.append(
            f"FID from {len(items)} images per row <= {num_features(cfg.fid)} feature "
            "dimensions: rank-deficient covariances, compare rows only loosely; add prompts/seeds"
        )
    scoring = "in-process scorers" if cfg.scoring.mode == "in-process" else (
        f"reward service {cfg.scoring.url or cfg.scoring.app_name!r}"
    )
    results = EvalResults(
        rows=summaries,
        scorers=[s.name for s in cfg.scoring.scorers],
        groups=prompt_set.group_names(),
        win_rates=win_rates,
        meta={
            "num_prompts": len(prompt_set),
            "seeds": cfg.seeds,
            "scoring": scoring,
            "fid_features": cfg.fid.features if fid_on else None,
            "reference": cfg.reference.source if size is not None else None,
            "num_reference": reference.moments.count or reference.hf.seen or reference.flat.seen,
            **reference_flat_noise(reference if size else None),
            "errors": errors,  # why scores are missing, with counts
            "warnings": problems,
            "config": cfg.model_dump(mode="json"),
        },
    )
    return results, _write(cfg, results, items, rows)


def _write(cfg: EvalConfig, results: EvalResults, items: list, rows: dict) -> dict[str, str]:
    """table.md, results.json, grids, plot and scores.jsonl into `output.dir` (any storage)."""
    shown = [items[k] for k in sorted(next(iter(rows.values())).grid)]
    images = None
    if cfg.output.save_images:
        images = {label: [image_name(label, item, cfg.output.image_format) for item in items]
                  for label in rows}
    with storage.staged_dir(cfg.output.dir) as out_dir:
        files = write_outputs(
            out_dir, results, {label: acc.grid_stack() for label, acc in rows.items()},
            [i.prompt for i in shown], [i.seed for i in shown],
            cfg.output.grid_prompts, cfg.output.grid_scale,
        )
        write_item_scores(out_dir / "scores.jsonl", {k: v.scores for k, v in rows.items()},
                          [i.prompt for i in items], [i.group for i in items],
                          [i.seed for i in items], images)
    names = {k: Path(v).name for k, v in files.items()} | {"scores": "scores.jsonl"}
    return {k: storage.join(cfg.output.dir, name) for k, name in names.items()}


def save_images(out_dir: str, stacks: dict[str, np.ndarray], items: list,
                image_format: str = "png") -> dict[str, list[str]]:
    """Write each row's (N, H, W, 3) stack where an evaluation saves its images; returns the
    relative names per row (as scores.jsonl records them)."""
    from PIL import Image  # deferred: only test helpers save stacks

    names = {}
    for label, stack in stacks.items():
        names[label] = [image_name(label, item, image_format) for item in items]
        for name, image in zip(names[label], stack, strict=True):
            path = Path(out_dir) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(image)).save(path)
    return names
