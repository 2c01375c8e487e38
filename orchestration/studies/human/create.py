"""Build a study folder from an evaluation's outputs (`orchestration/commands/evaluate.py`).

Reads `EVAL_DIR/scores.jsonl` (one line per row and item: prompt, seed, every scorer's score),
each item's image (its `image` in scores.jsonl) and, when present, `results.json` (which scorer
columns each model's recipe trained on). Writes STUDY_DIR/study.json and copies the images
shown to STUDY_DIR/images/, so a study stays readable after the evaluation folder goes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from orchestration.studies.human.design import QUESTION_KEYS, check_rater_ids, pick_items

STUDY_FILE = "study.json"
BLANK_GREY = 128


def read_eval_records(eval_dir: Path) -> dict[str, dict[int, dict]]:
    """row label -> item -> its scores.jsonl line; ValueError naming what is missing."""
    scores_file = eval_dir / "scores.jsonl"
    if not eval_dir.is_dir():
        raise ValueError(f"--eval-dir {eval_dir} does not exist; pass the output.dir of an "
                         "`orchestration/commands/evaluate.py` run")
    if not scores_file.is_file():
        raise ValueError(f"{eval_dir} has no scores.jsonl: is it an evaluation's output.dir?")
    rows: dict[str, dict[int, dict]] = {}
    for line in scores_file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            rows.setdefault(record["row"], {})[int(record["item"])] = record
    return rows


def image_path(eval_dir: Path, record: dict) -> Path:
    path = eval_dir / record.get("image", f"images/{record['row']}/{record['group']}/"
                                          f"{record['item']:05d}.png")
    if not path.is_file():
        raise ValueError(f"{path} is missing: rerun the evaluation with output.save_images=true "
                         "(the default) so every sample is saved")
    return path


def _trained_on(eval_dir: Path) -> dict[str, list[str]]:
    """Model name -> scorer columns its recipe trained on (from results.json, if any)."""
    results = eval_dir / "results.json"
    if not results.is_file():
        return {}
    models = json.loads(results.read_text(encoding="utf-8")).get("config", {}).get("models", [])
    return {m["name"]: list(m.get("trained_on", [])) for m in models}


def _comparison(eval_dir: Path, a: dict, b: dict, item_id: str) -> dict:
    if (a["prompt"], a["seed"]) != (b["prompt"], b["seed"]):
        raise ValueError(f"rows {a['row']} and {b['row']} differ at item {a['item']}: not the "
                         "same prompt and seed; were they evaluated in one run?")
    scorers = sorted(set(a["scores"]) & set(b["scores"]))
    return {
        "id": item_id, "kind": "pair", "a": a["row"], "b": b["row"], "eval_item": a["item"],
        "prompt": a["prompt"], "seed": a["seed"], "group": a["group"],
        "sources": [str(image_path(eval_dir, a)), str(image_path(eval_dir, b))],
        "scores": {s: [a["scores"][s], b["scores"][s]] for s in scorers},
    }


def plan_items(eval_dir: Path, pairs: list[tuple[str, str]], per_pair: int | None,
               attention: int, rng: np.random.Generator) -> list[dict]:
    """Comparison items of every pair, then `attention` checks (a sample against a blank)."""
    rows = read_eval_records(eval_dir)
    items: list[dict] = []
    for a, b in pairs:
        unknown = [r for r in (a, b) if r not in rows]
        if unknown:
            raise ValueError(f"--pairs: rows {unknown} are not in {eval_dir}; it has {sorted(rows)}")
        common = sorted(set(rows[a]) & set(rows[b]))
        for k in pick_items(common, per_pair, rng):
            items.append(_comparison(eval_dir, rows[a][k], rows[b][k], f"c{len(items):03d}"))
    if not items:
        raise ValueError("no comparison items: the rows share no evaluated item")
    for n, k in enumerate(rng.choice(len(items), size=attention, replace=attention > len(items))):
        base = items[int(k)]
        items.append({**base, "id": f"x{n:03d}", "kind": "attention", "b": "blank",
                      "expected": "a", "scores": {},
                      "sources": [base["sources"][0], None]})
    return items


def _copy_images(items: list[dict], folder: Path) -> None:
    folder.mkdir(parents=True)
    for item in items:
        src_a, src_b = item.pop("sources")
        item["images"] = [f"{item['id']}_a.png", f"{item['id']}_b.png"]
        with Image.open(src_a) as shown:  # PNG whatever the evaluation saved (JPEG by default)
            size = shown.size
            shown.save(folder / item["images"][0], format="PNG")
        item["width"] = size[0]
        if src_b is None:  # attention check: a flat grey picture of the same size
            Image.new("RGB", size, (BLANK_GREY,) * 3).save(folder / item["images"][1])
        else:
            with Image.open(src_b) as other:
                other.save(folder / item["images"][1], format="PNG")


def create_study(eval_dir: Path, out: Path, pairs: list[tuple[str, str]], raters: list[str],
                 seed: int = 0, per_pair: int | None = 20, repeats: int = 3,
                 attention: int = 2, lrm: tuple[Path, str] | None = None) -> Path:
    """Write a study folder (see module docstring); returns the study.json path.

    `lrm` = (LRM folder, pipeline or VAE folder): also score every pair with that LRM
    (column "lrm", orchestration/studies/human/lrm_scores.py), which the evaluation cannot record.
    """
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty; pick a new folder (answers of an earlier study "
                         "are never overwritten)")
    if repeats < 0 or attention < 0 or (per_pair is not None and per_pair < 1):
        raise ValueError("--repeats and --attention must be >= 0 and --per-pair >= 1")
    check_rater_ids(raters)
    rng = np.random.default_rng(seed)
    items = plan_items(eval_dir, pairs, per_pair, attention, rng)
    if lrm is not None:
        from orchestration.studies.human.lrm_scores import add_lrm_scores  # deferred: loads torch

        add_lrm_scores(items, *lrm)
    trained = _trained_on(eval_dir)
    _copy_images(items, out / "images")
    study = {
        "version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "eval_dir": str(eval_dir),
        "seed": seed,
        "repeats": repeats,
        "raters": raters,
        "questions": list(QUESTION_KEYS),
        "pairs": [list(p) for p in pairs],
        "trained_on": {row: trained.get(row.split("@")[0], []) for p in pairs for row in p},
        "items": items,
    }
    path = out / STUDY_FILE
    path.write_text(json.dumps(study, indent=1) + "\n", encoding="utf-8")
    return path


def load_study(study_dir: Path) -> dict:
    """study.json of a study folder; ValueError that says how to make one."""
    path = Path(study_dir) / STUDY_FILE
    if not path.is_file():
        raise ValueError(f"{study_dir} is not a study folder (no {STUDY_FILE}); make one with "
                         "`python -m orchestration.studies.human create --eval-dir ... --out DIR`")
    return json.loads(path.read_text(encoding="utf-8"))
