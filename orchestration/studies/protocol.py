"""Run the pre-registered protocol (docs/protocol.md) and write its tables.

    python -m orchestration.studies.protocol --freeze          # once, before any test run
    python -m orchestration.studies.protocol --split selection # choosing recipes: as often as needed
    python -m orchestration.studies.protocol --split test      # the reported tables, frozen files only

Reads `configs/protocol/protocol.yaml`: trains every frozen recipe at every training seed
(`trainer/run.py` into ``<out>/<recipe>/seed<k>``, skipped when exported), samples every run
and the toy teacher on the split's prompts x sampling seeds (`orchestration/commands/
evaluate.py`, in-process scoring by the protocol's judges), and for every comparison x judge
reports the cross-seed win rate, its two-level (runs + items) bootstrap p-value of "0.5",
the Holm-adjusted p-value over the whole family, and a simultaneous interval (confidence
1 - alpha / m, Bonferroni). A direction holds when it holds by every judge at Holm level alpha.
The test split refuses to run unless the frozen files match `configs/protocol/lock.json`
and takes no overrides. ``--set key=value`` (selection only) shrinks runs, e.g. to check
the command end to end: ``--split selection --set lcd.max_steps=2 --max-prompts 4``.
Writes ``<out>/protocol.json`` and ``<out>/protocol.md`` (default out: outputs/protocol/<split>).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from orchestration.evaluation.stats import cross_seed_win_rate, holm_adjust, run_spread
from orchestration.paths import REPO_ROOT
from orchestration.studies.protocol_config import (
    TEACHER,
    ProtocolConfig,
    check_lock,
    load_protocol,
    write_lock,
)
from orchestration.studies.seed_study import item_scores, model_name
from orchestration.studies.training_runs import train_once
from rglcd.toy.paths import TOY_PIPELINE_DIR


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("selection", "test"))
    parser.add_argument("--freeze", action="store_true", help="write lock.json and stop")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="key=value added to every recipe (selection split only)")
    parser.add_argument("--max-prompts", type=int, help="first N prompts (selection only)")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args(argv)
    if not args.freeze and args.split is None:
        parser.error("give --split selection|test, or --freeze")
    if args.split == "test" and (args.overrides or args.max_prompts):
        parser.error("the test split runs the frozen protocol: no --set, no --max-prompts")
    args.out = args.out or REPO_ROOT / "outputs" / "protocol" / (args.split or "")
    return args


def run_dir(out: Path, recipe: str, seed: int) -> Path:
    return out / recipe / f"seed{seed}"


def eval_config(cfg: ProtocolConfig, args):
    """One EvalConfig: a model per (recipe, seed) and the teacher, at the steps compared."""
    from orchestration.evaluation.config import EvalConfig  # deferred: loads torch

    split = cfg.splits[args.split]
    steps: dict[str, set[int]] = {}
    for side in (s for pair in cfg.parsed_comparisons() for s in pair):
        steps.setdefault(side[0], set()).add(side[1])
    models = [{"name": model_name(r, s), "kind": "lcm", "steps": sorted(n),
               "path": str(run_dir(args.out, r, s) / "pipeline")}
              for r, n in steps.items() if r != TEACHER for s in cfg.training_seeds]
    if TEACHER in steps:
        models.append({"name": model_name(TEACHER, 0), "kind": "teacher",
                       "path": str(TOY_PIPELINE_DIR), "steps": sorted(steps[TEACHER]),
                       "sampler": "ddim", "guidance_scale": 7.5})
    items = (args.max_prompts or 10**9) * len(split.sampling_seeds)
    return EvalConfig.model_validate({
        "models": models, "prompts": str(REPO_ROOT / split.prompts),
        "max_prompts": args.max_prompts, "seeds": split.sampling_seeds,
        "scoring": {"mode": "in-process",
                    "scorers": [{"name": j, "kind": j} for j in cfg.judges]},
        "win_rates": {"judge": cfg.judges[0], "pairs": []},
        "fid": {"enabled": items > 32}, "output": {"dir": str(args.out / "eval")},
    })


def compare(cfg: ProtocolConfig, scores: dict[str, dict[str, np.ndarray]],
            samples: int = 2000) -> list[dict]:
    """Every comparison x judge: win rate, p-value, Holm-adjusted p, simultaneous interval."""
    from orchestration.evaluation.config import row_label  # deferred: loads torch

    def runs(judge: str, name: str, steps: int) -> np.ndarray:
        seeds = [0] if name == TEACHER else cfg.training_seeds
        return np.stack([scores[judge][row_label(model_name(name, s), steps)] for s in seeds])

    tests = [(a, b, j) for a, b in cfg.parsed_comparisons() for j in cfg.judges]
    level = 1 - cfg.alpha / len(tests)  # Bonferroni-simultaneous intervals over the family
    out = []
    for (a, n), (b, m), judge in tests:
        sa, sb = runs(judge, a, n), runs(judge, b, m)
        out.append({"a": f"{a}@{n}", "b": f"{b}@{m}", "judge": judge,
                    "a_runs": run_spread(sa), "b_runs": run_spread(sb),
                    **cross_seed_win_rate(sa, sb, confidence=level, samples=samples)})
    for result, adjusted in zip(out, holm_adjust([r["p_value"] for r in out]), strict=True):
        result["p_holm"] = float(adjusted)
        significant = adjusted <= cfg.alpha
        result["verdict"] = ("A better" if significant and result["win_rate"] > 0.5 else
                             "B better" if significant and result["win_rate"] < 0.5 else
                             "no difference shown")
    return out


def code_commit() -> str:
    """The checked-out commit (the trainer's defaults live in code, not in the locked YAML)."""
    import subprocess

    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                          text=True, check=False)
    return done.stdout.strip() or "unknown (not a git checkout)"


def markdown(results: list[dict], cfg: ProtocolConfig, args) -> str:
    split = cfg.splits[args.split]
    lines = [f"# Protocol, {args.split} split", "", f"Code at commit {code_commit()}.", "",
             f"Prompts `{split.prompts}`" + (f" (first {args.max_prompts})" if args.max_prompts
                                             else "")
             + f" x sampling seeds {split.sampling_seeds}; training seeds {cfg.training_seeds}; "
             f"{len(results)} tests, Holm at family-wise alpha {cfg.alpha}; intervals "
             f"simultaneous ({100 * results[0]['confidence']:.2f}%, runs + items resampled).",
             *([f"Overrides (not the frozen recipes): {' '.join(args.overrides)}"]
               if args.overrides else []), "",
             "| A | B | judge | A mean | B mean | win rate of A | interval | p | p (Holm) "
             "| verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['a']} | {r['b']} | {r['judge']} | {r['a_runs']['mean']:.3f} "
                     f"| {r['b_runs']['mean']:.3f} | {r['win_rate']:.3f} "
                     f"| [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {r['p_value']:.4f} "
                     f"| {r['p_holm']:.4f} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict] | None:
    args = parse_args(argv)
    try:
        cfg = load_protocol()
        if args.freeze:
            print(f"wrote {write_lock(cfg)}")
            return None
        if args.split == "test":
            check_lock(cfg)
        ecfg = eval_config(cfg, args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if not args.skip_train:
        for seed in cfg.training_seeds:
            for r in cfg.recipes:
                train_once(REPO_ROOT / r.config, run_dir(args.out, r.name, seed),
                           f"protocol-{r.name}-seed{seed}", [*r.overrides, *args.overrides,
                                                             f"seed={seed}"])
    import ray

    from orchestration.evaluation.runner import run_evaluation  # deferred: loads Ray, diffusers

    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    _, files = run_evaluation(ecfg)
    scores = {j: item_scores(Path(files["scores"]), j) for j in cfg.judges}
    results = compare(cfg, scores, args.bootstrap)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"split": args.split, "commit": code_commit(), "overrides": args.overrides,
              "max_prompts": args.max_prompts, "results": results}
    (args.out / "protocol.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    table = markdown(results, cfg, args)
    (args.out / "protocol.md").write_text(table, encoding="utf-8")
    print(table)
    return results


if __name__ == "__main__":
    main()
