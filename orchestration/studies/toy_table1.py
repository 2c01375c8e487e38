"""The paper's Table 1 in miniature, from the committed toy artifacts, in one command.

    python -m orchestration.studies.toy_table1 [--retrain] [--docs-dir docs/table1]

1. Trains (each a real ``trainer/run.py`` run on a local Ray instance, skipped when its
   exported pipeline already exists, unless ``--retrain``) the four distilled models:
   LCM (configs/toy-lcd.yaml), RG-LCM toy-clip (configs/toy-rglcd-toy-clip.yaml), RG-LCM
   toy-clip with a large beta (configs/toy-rglcd-toy-clip-large-beta.yaml) and RG-LCM toy-judge
   + LRM (configs/toy-rglcd-lrm-toy-judge.yaml, the default recipe), into outputs/table1/<recipe>/.
2. Evaluates them with the toy teacher at 50 / 4 / 2 DDIM steps (configs/eval/toy-table1.yaml,
   orchestration/commands/evaluate.py: same prompts and seeds, toy-judge and toy-clip through the
   reward service, FID in the mini-CLIP space, HF-noise ratio, flat-region noise, win rates).
3. Copies table.md, results.json, the grids and the plot into ``--docs-dir`` and writes
   ``claims.md`` there: each of the paper's directions with the figures and whether the
   miniature reproduces it.

Takes ~30 min on two CPU cores (four ~6-minute trainings, then the evaluation).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from orchestration.evaluation.config import EvalConfig
from orchestration.evaluation.runner import run_evaluation
from orchestration.paths import REPO_ROOT
from orchestration.studies.training_runs import train_once
from rglcd.configuration import load_config

RUNS_DIR = REPO_ROOT / "outputs" / "table1"
EVAL_CONFIG = REPO_ROOT / "configs" / "eval" / "toy-table1.yaml"
RECIPES = ("toy-lcd", "toy-rglcd-toy-clip", "toy-rglcd-toy-clip-large-beta",
           "toy-rglcd-lrm-toy-judge")
COPIED = ("table.md", "results.json", "metrics_vs_steps.png")
EXPERT = "toy-judge"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retrain", action="store_true", help="Train even if exported.")
    parser.add_argument("--docs-dir", type=Path, default=REPO_ROOT / "docs" / "table1")
    parser.add_argument("--skip-eval", action="store_true", help="Only train.")
    return parser.parse_args(argv)


def train(recipe: str, retrain: bool) -> None:
    train_once(REPO_ROOT / "configs" / f"{recipe}.yaml", RUNS_DIR / recipe,
               f"table1-{recipe}", retrain=retrain, label=recipe)


def evaluate() -> Path:
    import ray  # the evaluation's sampling tasks; imported when the study gets this far

    out_dir = RUNS_DIR / "eval"
    cfg = load_config(EvalConfig, EVAL_CONFIG, [f"output.dir={out_dir}"])
    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    _, files = run_evaluation(cfg)
    print(Path(files["table"]).read_text(encoding="utf-8"))
    return out_dir


def _row(results: dict, label: str) -> dict:
    for row in results["rows"]:
        if row["label"] == label:
            return row
    raise KeyError(f"row {label!r} missing from results.json")


def claims(results: dict) -> list[tuple[str, str, bool]]:
    """(claim, figures, holds) for each direction of the paper the miniature can test."""
    def expert(label):
        return _row(results, label)["scores"][EXPERT]["mean"]

    def metric(label, key):
        return _row(results, label)[key]

    out = []
    for rg in ("rg-lcm-clip", "rg-lcm-judge-lrm"):
        a, b = expert(f"{rg}@4"), expert("lcm@4")
        out.append((f"{rg} beats LCM on the expert score at 4 steps",
                    f"{EXPERT} {a:.2f} vs {b:.2f}", a > b))
    teacher = expert("teacher@50")
    for rg in ("rg-lcm-clip", "rg-lcm-judge-lrm"):
        a = expert(f"{rg}@2")
        out.append((f"{rg} at 2 steps matches or beats the teacher at 50 steps",
                    f"{EXPERT} {a:.2f} vs {teacher:.2f}", a >= teacher - 0.05))
    for key, name in (("hf_noise_ratio", "HF-noise ratio"), ("flat_noise", "flat-region noise"),
                      ("fid", "FID")):
        if any(row.get(key) is None for row in results["rows"]):
            continue  # an evaluation made before this metric existed, or with it switched off
        large, base = metric("rg-lcm-clip-large-beta@4", key), metric("rg-lcm-clip@4", key)
        out.append((f"a large beta raises the {name} (direct, 4 steps)",
                    f"{large:.3f} vs {base:.3f}", large > base))
        lrm = metric("rg-lcm-judge-lrm@4", key)
        out.append((f"the LRM lowers the {name} versus direct optimisation with a large beta",
                    f"{lrm:.3f} vs {large:.3f}", lrm < large))
    return out


def write_docs(eval_dir: Path, docs_dir: Path) -> Path:
    docs_dir.mkdir(parents=True, exist_ok=True)
    for path in [*(eval_dir / name for name in COPIED), *eval_dir.glob("grid_seed*.png")]:
        shutil.copy2(path, docs_dir / path.name)
    committed = docs_dir / "results.json"  # repository-relative paths, not this machine's
    committed.write_text(committed.read_text().replace(f"{REPO_ROOT}/", ""), encoding="utf-8")
    results = json.loads((eval_dir / "results.json").read_text())
    lines = ["# Does the miniature reproduce the paper's directions?", "",
             "Written by `python -m orchestration.studies.toy_table1` from `results.json` "
             f"({results['num_prompts']} held-out prompts x {len(results['seeds'])} seeds; "
             f"expert = {EXPERT} overall, 0-10).", "",
             "| claim | figures | reproduced |", "|---|---|---|"]
    for claim, figures, holds in claims(results):
        lines.append(f"| {claim} | {figures} | {'yes' if holds else '**no**'} |")
    path = docs_dir / "claims.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    for recipe in RECIPES:
        train(recipe, args.retrain)
    if args.skip_eval:
        return 0
    eval_dir = evaluate()
    claims_file = write_docs(eval_dir, args.docs_dir)
    print((args.docs_dir / "table.md").read_text())
    print(claims_file.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
