"""Writers of the evaluation outputs: Table-1-style markdown, JSON, PNG grids, metric plot.

`EvalResults` holds every figure; the writers only format it. The markdown table follows the
paper's Table 1: one row per (model, number of steps), columns = metrics. The grids are drawn
by grid.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from orchestration.evaluation.grid import write_grid

TRAINED_MARK = "*"
FLAT_NOISE_NOTE = (
    "Flat-region noise: RMS deviation (0-255) of each pixel from its 3x3 median over the "
    "pixels away from any edge; it rises with noise and not with sharper edges, which the "
    "HF-noise ratio also counts."
)
TRAINED_NOTE = (
    f"`{TRAINED_MARK}` = the row's recipe trained on this scorer (directly or as its LRM's "
    "expert): its verdict there is not a held-out one."
)


@dataclass
class RowResult:
    """One table row: a model at one step count."""

    label: str  # "name@steps"
    model: str
    kind: str  # teacher | lcm
    sampler: str  # ddim | dpmsolver++ | lcm
    steps: int
    unet_calls: int
    guidance_scale: float
    scores: dict[str, dict] = field(default_factory=dict)  # scorer -> summary (+ "groups")
    fid: float | None = None
    hf_noise_ratio: float | None = None
    flat_noise: float | None = None  # mean flat-region noise, 0-255
    flat_noise_skipped: int = 0  # images without a flat pixel, left out of that mean
    seconds_per_image: float | None = None
    trained_on: list[str] = field(default_factory=list)  # scorers the recipe optimised


@dataclass
class EvalResults:
    rows: list[RowResult]
    scorers: list[str]
    groups: list[str]
    win_rates: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # prompts, seeds, reference, config, errors

    def as_dict(self) -> dict:
        return {
            "rows": [asdict(r) for r in self.rows],
            "scorers": self.scorers,
            "groups": self.groups,
            "win_rates": self.win_rates,
            **self.meta,
        }


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _row_name(row: RowResult) -> str:
    if row.kind == "teacher":
        return f"{row.model} ({row.sampler}, CFG {row.guidance_scale:g})"
    if row.kind == "lcm-lora":
        return f"{row.model} (LCM-LoRA, CFG {row.guidance_scale:g})"
    return f"{row.model} (LCM, w+1 = {row.guidance_scale:g})"


def markdown_table(results: EvalResults) -> str:
    """The main table: rows = model x steps; columns = mean scores, FID, HF-noise ratio,
    flat-region noise."""
    head = ["Model", "Steps", "UNet calls", *(f"{s} (mean)" for s in results.scorers)]
    head += ["FID", "HF-noise ratio", "Flat-region noise"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in results.rows:
        cells = [_row_name(row), str(row.steps), str(row.unet_calls)]
        cells += [_fmt(row.scores[s]["mean"]) + (f" {TRAINED_MARK}" if s in row.trained_on else "")
                  for s in results.scorers]
        cells += [_fmt(row.fid, 2), _fmt(row.hf_noise_ratio, 2), _fmt(row.flat_noise, 2)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _flat_noise_notes(results)
    if any(row.trained_on for row in results.rows):
        lines += ["", TRAINED_NOTE]
    return "\n".join(lines)


def _flat_noise_notes(results: EvalResults) -> list[str]:
    """What the flat-region noise column is, the reference's level, images left out."""
    reference = results.meta.get("reference_flat_noise")
    if reference is None and all(row.flat_noise is None for row in results.rows):
        return []
    note = FLAT_NOISE_NOTE
    if reference is not None:
        note += f" Reference images: {reference:.2f}."
    skipped = [f"{row.label}: {row.flat_noise_skipped}" for row in results.rows
               if row.flat_noise_skipped]
    if results.meta.get("reference_flat_noise_skipped"):
        skipped.append(f"reference: {results.meta['reference_flat_noise_skipped']}")
    if skipped:
        note += " Images without a flat pixel, left out of the mean: " + ", ".join(skipped) + "."
    return ["", note]


def group_table(results: EvalResults, scorer: str) -> str:
    """Mean `scorer` score per prompt group (HPSv2 styles) and their average (the HPSv2
    benchmark's summary figure): rows = model x steps."""
    head = ["Model", "Steps", *results.groups, "mean of groups"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in results.rows:
        groups = row.scores[scorer]["groups"]
        means = [groups.get(g) for g in results.groups]
        finite = [m for m in means if m is not None and math.isfinite(m)]
        average = sum(finite) / len(finite) if len(finite) == len(means) else None
        cells = [row.model, str(row.steps), *(_fmt(m) for m in means), _fmt(average)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def win_rate_table(win_rates: list[dict]) -> str:
    lines = [
        "| A | B | judge | A wins | ties | B wins | win rate of A | CI |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for w in win_rates:
        ci = f"[{w['ci_low']:.3f}, {w['ci_high']:.3f}] ({w['method']}, {w['confidence']:.0%})"
        judge = w["judge"] + (f" {TRAINED_MARK}" if w.get("judge_trained") else "")
        lines.append(
            f"| {w['a']} | {w['b']} | {judge} | {w['wins']} | {w['ties']} | {w['losses']} "
            f"| {w['win_rate']:.3f} | {ci} |"
        )
    if any(w.get("judge_trained") for w in win_rates):
        lines += ["", f"`{TRAINED_MARK}` = a side's recipe trained on the judge: "
                  + ", ".join(f"{w['a']} vs {w['b']}: {'/'.join(w['judge_trained'])}"
                              for w in win_rates if w.get("judge_trained")) + "."]
    return "\n".join(lines)


def _grid_section(results: EvalResults, grid_files: list[str], prompts: Sequence[str]) -> list[str]:
    columns = ", ".join(r.label for r in results.rows)
    parts = ["", "## Sample grids", "", f"Columns, left to right: {columns}."]
    if prompts:
        parts += ["", "Rows, top to bottom (the same prompts in every grid, one grid per "
                  "sampling seed):", ""]
        parts += [f"{k}. {prompt}" for k, prompt in enumerate(prompts, start=1)]
    return [*parts, "", *(f"![{name}]({name})" for name in grid_files)]


def markdown_report(
    results: EvalResults, grid_files: list[str], grid_prompts: Sequence[str] = ()
) -> str:
    meta = results.meta
    parts = [
        "# Evaluation",
        f"{meta.get('num_prompts', '?')} prompts x {len(meta.get('seeds', []))} seed(s); "
        f"scores from {meta.get('scoring', '?')}; FID features: {meta.get('fid_features', 'n/a')}; "
        f"reference: {meta.get('reference', 'n/a')}.",
        "",
        markdown_table(results),
    ]
    if len(results.groups) > 1:
        for scorer in results.scorers:
            parts += ["", f"## {scorer} per prompt group", "", group_table(results, scorer)]
    if results.win_rates:
        parts += ["", "## Head-to-head win rates", "", win_rate_table(results.win_rates)]
    if grid_files:
        parts += _grid_section(results, grid_files, grid_prompts)
    return "\n".join(parts) + "\n"


def _finite_json(value):
    """NaN/inf -> None so the JSON is strict (json.dumps(allow_nan=False))."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    return value


def write_json(results: EvalResults, path: Path) -> None:
    text = json.dumps(_finite_json(results.as_dict()), indent=2, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def plot_metrics_vs_steps(results: EvalResults, path: Path) -> None:
    """One panel per metric (scores, FID, HF ratio, flat-region noise): metric vs steps, one
    line per model; the reference images' flat-region noise as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [(f"{s} (mean)", lambda r, s=s: r.scores[s]["mean"]) for s in results.scorers]
    metrics += [("FID", lambda r: r.fid), ("HF-noise ratio", lambda r: r.hf_noise_ratio),
                ("Flat-region noise", lambda r: r.flat_noise)]
    metrics = [(n, get) for n, get in metrics if any(get(r) is not None for r in results.rows)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.4), squeeze=False)
    models = list(dict.fromkeys(r.model for r in results.rows))
    for ax, (name, get) in zip(axes[0], metrics, strict=True):
        for model in models:
            points = [(r.steps, get(r)) for r in results.rows if r.model == model]
            points = [(s, v) for s, v in sorted(points) if v is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=model)
        if name == "Flat-region noise" and results.meta.get("reference_flat_noise") is not None:
            ax.axhline(results.meta["reference_flat_noise"], color="grey", linestyle="--",
                       label="reference")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sampling steps")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(
    out_dir: Path,
    results: EvalResults,
    images: dict[str, np.ndarray],
    item_prompts: list[str],
    item_seeds: list[int],
    grid_prompts: int,
    grid_scale: int,
) -> dict[str, str]:
    """Write table.md, results.json, scores.jsonl, grid_seed<s>.png and the metric plot.

    `images[label]` is (S*P, H, W, 3) uint8 with item k = s*P + p. Returns name -> path.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = list(dict.fromkeys(item_seeds))
    per_seed = len(item_prompts) // len(seeds)
    labels = [(r.model, f"{r.steps} step" + ("" if r.steps == 1 else "s")) for r in results.rows]
    prompts = item_prompts[: min(grid_prompts, per_seed)]  # the same in every seed's grid
    grid_files = []
    for s, seed in enumerate(seeds):
        rows = slice(s * per_seed, s * per_seed + len(prompts))
        name = f"grid_seed{seed}.png"
        write_grid([images[r.label][rows] for r in results.rows], out_dir / name, grid_scale,
                   labels, prompts)
        grid_files.append(name)
    files = {"table": out_dir / "table.md", "json": out_dir / "results.json"}
    files["table"].write_text(markdown_report(results, grid_files, prompts), encoding="utf-8")
    write_json(results, files["json"])
    files["plot"] = out_dir / "metrics_vs_steps.png"
    plot_metrics_vs_steps(results, files["plot"])
    return {k: str(v) for k, v in files.items()} | {
        f"grid_seed{seed}": str(out_dir / n) for seed, n in zip(seeds, grid_files, strict=True)
    }


def write_item_scores(
    path: Path,
    scores: dict[str, dict[str, np.ndarray]],
    item_prompts: list[str],
    item_groups: list[str],
    item_seeds: list[int],
    images: dict[str, list[str]] | None = None,
) -> None:
    """scores.jsonl: one line per (row, item) with its prompt, group, seed, every score and,
    when saved, its image (path relative to the evaluation's folder)."""
    with path.open("w", encoding="utf-8") as f:
        for label, by_scorer in scores.items():
            for k, prompt in enumerate(item_prompts):
                line = {
                    "row": label, "item": k, "prompt": prompt, "group": item_groups[k],
                    "seed": item_seeds[k],
                    "scores": {name: float(v[k]) for name, v in by_scorer.items()},
                }
                if images is not None:
                    line["image"] = images[label][k]
                f.write(json.dumps(_finite_json(line), allow_nan=False) + "\n")
