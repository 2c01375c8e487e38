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

from orchestration.evaluation.config import EvalConfig
from orchestration.evaluation.runner import run_evaluation
from rglcd import storage
from rglcd.configuration import load_config


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
