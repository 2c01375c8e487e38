"""Compare training recipes across training seeds: is recipe A's model better than B's, or
was one run lucky?

    python -m orchestration.studies.seed_study                      # the default: see below
    python -m orchestration.studies.seed_study --seeds 0 1 2 3 \
        --recipe lcd=configs/toy-lcd.yaml \
        --recipe "beta5=configs/toy-rglcd-lrm-toy-judge.yaml reward.beta=5" \
        --compare beta5@2:lcd@4 --compare beta5@4:lcd@4

On the toy world two runs of one recipe that differ only in the training seed (or in when the
expert's asynchronous scores arrive) differ by about as much as the recipes being compared,
so a single run per recipe cannot tell them apart. This trains every recipe at every seed
(each a real `trainer/run.py` run into ``<out>/<recipe>/seed<k>``, skipped when its exported
pipeline exists unless ``--retrain``), samples every model on the same prompts and sampling
seeds with `orchestration/commands/evaluate.py` (in-process scoring), and for each comparison
``A@n:B@m`` reports:

- each side's mean judge score, as the mean over runs of the run means, with their spread;
- the all-pairs win rate of A's runs over B's runs with a two-level bootstrap interval
  (runs and items resampled; `orchestration.evaluation.stats.cross_seed_win_rate`) and the
  lowest / highest single pairing.

Writes ``<out>/study.md`` and ``<out>/study.json``. Default: plain LCD (configs/toy-lcd.yaml)
against the default recipe (configs/toy-rglcd-lrm-toy-judge.yaml) at training seeds 0-2, comparisons rglcd@2 vs
lcd@4 and rglcd@4 vs lcd@4, the toy judge, 64 held-out prompts x sampling seeds 0-2.
Takes 3-4 minutes per plain-LCD run and 4-9 per RG-LCD + LRM run on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestration.evaluation.stats import cross_seed_win_rate, run_spread
from orchestration.paths import REPO_ROOT
from orchestration.studies.training_runs import train_once

DEFAULT_RECIPES = ("lcd=configs/toy-lcd.yaml", "rglcd=configs/toy-rglcd-lrm-toy-judge.yaml")
DEFAULT_COMPARISONS = ("rglcd@2:lcd@4", "rglcd@4:lcd@4")


@dataclass(frozen=True)
class Recipe:
    name: str
    config: str
    overrides: tuple[str, ...]


def parse_recipe(text: str) -> Recipe:
    """'NAME=CONFIG [key=value ...]' -> Recipe; the config path must exist."""
    head, *overrides = text.split()
    name, sep, config = head.partition("=")
    if not sep or not name or not config:
        raise ValueError(f"--recipe {text!r}: write NAME=CONFIG.yaml [key=value ...]")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"--recipe {text!r}: name {name!r} may hold letters, digits, - and _")
    for candidate in (Path(config), REPO_ROOT / config):  # the runs start in the repo root
        if candidate.is_file():
            return Recipe(name, str(candidate.resolve()), tuple(overrides))
    raise ValueError(f"--recipe {text!r}: no config file {config}")


def parse_comparison(text: str, recipes: dict[str, Recipe]) -> tuple[tuple[str, int], ...]:
    """'A@n:B@m' -> ((A, n), (B, m)), both recipes known."""
    sides = []
    for side in text.split(":"):
        name, sep, steps = side.partition("@")
        if not sep or not steps.isdigit() or int(steps) < 1:
            raise ValueError(f"--compare {text!r}: write A@steps:B@steps, e.g. rglcd@2:lcd@4")
        if name not in recipes:
            raise ValueError(f"--compare {text!r}: unknown recipe {name!r}; have {sorted(recipes)}")
        sides.append((name, int(steps)))
    if len(sides) != 2:
        raise ValueError(f"--compare {text!r}: write exactly two sides, A@n:B@m")
    return tuple(sides)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", action="append", help="NAME=CONFIG [key=value ...]")
    parser.add_argument("--compare", action="append", help="A@steps:B@steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sample-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--prompts", default="toy:heldout")
    parser.add_argument("--max-prompts", type=int, default=64)
    parser.add_argument("--judge", default="toy-judge")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "seed-study")
    parser.add_argument("--retrain", action="store_true", help="Train even if exported.")
    parser.add_argument("--skip-train", action="store_true", help="Only evaluate.")
    return parser.parse_args(argv)


def model_name(recipe: str, seed: int) -> str:
    """The evaluation's model name of one run (its table rows are row_label(name, steps))."""
    return f"{recipe}-s{seed}"


def run_dir(out: Path, recipe: Recipe, seed: int) -> Path:
    return out / recipe.name / f"seed{seed}"


def train(recipe: Recipe, seed: int, out: Path, retrain: bool) -> None:
    train_once(recipe.config, run_dir(out, recipe, seed), f"study-{recipe.name}-seed{seed}",
               (*recipe.overrides, f"seed={seed}"), retrain, f"{recipe.name} seed {seed}")


def eval_config(args, recipes: dict[str, Recipe], comparisons):
    """One EvalConfig with a model per (recipe, seed), at the step counts compared."""
    from orchestration.evaluation.config import EvalConfig  # deferred: loads torch

    steps: dict[str, set[int]] = {}
    for side in (s for pair in comparisons for s in pair):
        steps.setdefault(side[0], set()).add(side[1])
    models = [
        {"name": model_name(name, seed), "kind": "lcm", "steps": sorted(counts),
         "path": str(run_dir(args.out, recipes[name], seed) / "pipeline")}
        for name, counts in steps.items() for seed in args.seeds
    ]
    return EvalConfig.model_validate({
        "models": models, "prompts": args.prompts, "max_prompts": args.max_prompts,
        "seeds": args.sample_seeds, "scoring": {"mode": "in-process"},
        "win_rates": {"judge": args.judge, "pairs": []},
        "output": {"dir": str(args.out / "eval")},
    })


def item_scores(path: Path, judge: str) -> dict[str, np.ndarray]:
    """row label -> (items,) judge scores from rglcd-evaluate's scores.jsonl (NaN = missing)."""
    rows: dict[str, list[tuple[int, float]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        value = item["scores"].get(judge)
        rows.setdefault(item["row"], []).append((item["item"], np.nan if value is None else value))
    return {row: np.array([v for _, v in sorted(pairs)]) for row, pairs in rows.items()}


def summarise(scores: dict[str, np.ndarray], comparisons, seeds: list[int]) -> list[dict]:
    """Per comparison: each side's spread over runs and the cross-seed win rate."""
    from orchestration.evaluation.config import row_label  # deferred: loads torch

    def runs(name: str, steps: int) -> np.ndarray:
        return np.stack([scores[row_label(model_name(name, seed), steps)] for seed in seeds])

    out = []
    for (a, n), (b, m) in comparisons:
        scores_a, scores_b = runs(a, n), runs(b, m)
        out.append({
            "a": f"{a}@{n}", "b": f"{b}@{m}",
            "a_runs": run_spread(scores_a), "b_runs": run_spread(scores_b),
            "a_run_means": np.nanmean(scores_a, axis=1).round(4).tolist(),
            "b_run_means": np.nanmean(scores_b, axis=1).round(4).tolist(),
            **cross_seed_win_rate(scores_a, scores_b),
        })
    return out


def markdown(results: list[dict], args, recipes: dict[str, Recipe]) -> str:
    lines = [
        "# Seed study", "",
        f"Training seeds {args.seeds}; {args.max_prompts} prompts of {args.prompts} x sampling "
        f"seeds {args.sample_seeds}; judge {args.judge}.", "",
        *[f"- `{r.name}`: `{_shown(r.config)}` {' '.join(r.overrides)}".rstrip()
          for r in recipes.values()],
        "",
        "| A | B | A mean (runs) | B mean (runs) | win rate of A | 95% CI (runs + items) "
        "| single pairings |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['a']} | {r['b']} | {r['a_runs']['mean']:.3f} ({_means(r['a_run_means'])}) "
            f"| {r['b_runs']['mean']:.3f} ({_means(r['b_run_means'])}) | {r['win_rate']:.3f} "
            f"| [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
            f"| {r['min_pairing']:.3f}-{r['max_pairing']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _shown(path: str) -> str:
    """A config path as the user would type it: relative to the repo root when inside it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else path


def _means(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    recipes = {r.name: r for r in map(parse_recipe, args.recipe or DEFAULT_RECIPES)}
    comparisons = [parse_comparison(c, recipes) for c in args.compare or DEFAULT_COMPARISONS]
    cfg = eval_config(args, recipes, comparisons)  # validates the figures asked for first
    if not args.skip_train:
        for seed in args.seeds:
            for recipe in recipes.values():
                train(recipe, seed, args.out, args.retrain)

    import ray

    # deferred: loads diffusers, torch, torchmetrics, transformers
    from orchestration.evaluation.runner import run_evaluation

    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    _, files = run_evaluation(cfg)
    results = summarise(item_scores(Path(files["scores"]), args.judge), comparisons, args.seeds)
    (args.out / "study.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    table = markdown(results, args, recipes)
    (args.out / "study.md").write_text(table, encoding="utf-8")
    print(table)
    print(f"outputs: {args.out / 'study.md'}, {args.out / 'study.json'}, {cfg.output.dir}")
    return results


if __name__ == "__main__":
    main()
