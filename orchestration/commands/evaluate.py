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

What it does: generates every (model, steps) row's images on `generation.num_workers` Ray
actors (one pipeline load per actor and model; no pipeline keeps a safety checker, so teacher
and students run the same components) from the same initial noise per (prompt, seed), and
streams them: each chunk is written to `output.dir` as it is made
(images/<row>/seed<s>/<group>/<idx:05d>.jpg: with `prompts: hpsv2:<dir>` each seed folder is
the HPSv2 benchmark's own layout, the paper's Table 1 protocol), scored through the reward
service (deploying the configured scorers as a temporary Serve app when none is running) or
in-process, and folded into its row's running figures (scores, FID feature moments,
high-frequency fractions), so the driver never holds a row's images. It then computes mean
scores (overall, per prompt group and their mean), FID against reference images, the
high-frequency-noise ratio and head-to-head win rates with 95% CIs, and writes table.md,
results.json, scores.jsonl (with each item's image), grid_seed<s>.png (a column per table
row, headed by its model and steps; a row per prompt, numbered, the prompts listed in
table.md) and metrics_vs_steps.png. `output.dir`, `models.*.path` and the prompt files may be
local paths or object-store URIs (s3://, gs://). A model's `trained_on` lists the scorer
columns its recipe optimised: table.md marks them, so a claim can be read off a judge the
recipe did not train on (the toy world's default scorers include `heldout-judge`,
rglcd/toy/heldout_judge.py). SDXL LCM-LoRA runs are rows of kind `lcm-lora`: their fused
export, or the teacher with `adapters` (configs/eval/sdxl.yaml).

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
from orchestration.evaluation.summary import compute_win_rates, summarise_rows
from rglcd import storage
from rglcd.configuration import load_config


def _check_models(cfg: EvalConfig) -> None:
    for spec in cfg.models:
        if not storage.is_file(storage.join(spec.path, "model_index.json")):
            raise ValueError(
                f"model {spec.name!r}: {spec.path} is not a diffusers pipeline folder (no "
                "model_index.json); export one with trainer/export.py or fix models.*.path"
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
    from orchestration.evaluation.ray_tasks import scorer_service, stream_chunks

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
                    reference.add([], None, {}, chunk.features, chunk.hf, 0.0)
                    continue
                prompts = [item.prompt for item in chunk.items]
                scores = {s: backend.score(s, chunk.images, prompts) for s in scorers}
                rows[chunk.row].add(chunk.items, chunk.images, scores, chunk.features,
                                    chunk.hf, chunk.seconds)
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
    if (cfg.fid.enabled or cfg.hf_noise.enabled) and cfg.reference.source is not None:
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
            "num_reference": reference.moments.count or reference.hf_count,
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
    from PIL import Image

    names = {}
    for label, stack in stacks.items():
        names[label] = [image_name(label, item, image_format) for item in items]
        for name, image in zip(names[label], stack, strict=True):
            path = Path(out_dir) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(image)).save(path)
    return names


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
    print(storage.read_text(files["table"]))
    for problem in results.meta["errors"] + results.meta["warnings"]:
        print(f"warning: {problem}", file=sys.stderr)
    print("outputs:", ", ".join(files.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
