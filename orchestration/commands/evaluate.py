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

from orchestration.evaluation.config import EvalConfig
from orchestration.evaluation.runner import run_evaluation
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
    print((Path(files["table"])).read_text(encoding="utf-8"))
    for problem in results.meta["errors"] + results.meta["warnings"]:
        print(f"warning: {problem}", file=sys.stderr)
    print("outputs:", ", ".join(files.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
