"""From generated images and per-item scores to the figures of the table (no Ray, no I/O).

Items are laid out as in items.py: item k = s*P + p is prompt p with seed s.
"""

from __future__ import annotations

import numpy as np

from orchestration.evaluation.accumulate import RowAccumulator
from orchestration.evaluation.config import EvalConfig, row_label
from orchestration.evaluation.image_metrics import frechet_distance
from orchestration.evaluation.prompts import PromptSet
from orchestration.evaluation.report import RowResult
from orchestration.evaluation.stats import nan_summary, win_rate

Scores = dict[str, dict[str, np.ndarray]]  # row label -> scorer -> (S*P,) scores (NaN = missing)


def score_summary(values: np.ndarray, item_groups: list[str]) -> dict:
    """mean/std/n/missing over all items, plus the mean per prompt group."""
    groups = np.asarray(item_groups)
    summary = nan_summary(values)
    summary["groups"] = {
        g: nan_summary(values[groups == g])["mean"] for g in dict.fromkeys(item_groups)
    }
    return summary


def summarise_rows(
    cfg: EvalConfig,
    prompt_set: PromptSet,
    rows: dict[str, RowAccumulator],
    reference: RowAccumulator | None = None,
) -> list[RowResult]:
    """One RowResult per (model, steps): mean scores (overall and per group), FID, HF ratio,
    flat-region noise (the mean over the row's images that have a flat pixel).

    `reference` holds the reference set's feature moments and HF fractions, when it was read.
    """
    item_groups = prompt_set.groups * len(cfg.seeds)
    out = []
    for spec, steps in cfg.rows():
        label = row_label(spec.name, steps)
        acc = rows[label]
        row = RowResult(
            label=label,
            model=spec.name,
            kind=spec.kind,
            sampler="lcm" if spec.kind != "teacher" else spec.sampler,
            steps=steps,
            unet_calls=spec.unet_calls(steps),
            guidance_scale=spec.guidance,
            seconds_per_image=acc.seconds / max(acc.done, 1),
            trained_on=list(spec.trained_on),
        )
        row.scores = {name: score_summary(v, item_groups) for name, v in acc.scores.items()}
        if reference is not None and reference.moments.count and acc.moments.count:
            row.fid = frechet_distance(acc.moments, reference.moments)
        if reference is not None and reference.hf.mean and acc.hf.mean is not None:
            row.hf_noise_ratio = acc.hf.mean / reference.hf.mean
        row.flat_noise, row.flat_noise_skipped = acc.flat.mean, acc.flat.skipped
        out.append(row)
    return out


def reference_flat_noise(reference: RowAccumulator | None) -> dict:
    """The reference images' flat-region noise (the level of clean scenes) for results.json."""
    if reference is None or not reference.flat.seen:
        return {"reference_flat_noise": None, "reference_flat_noise_skipped": 0}
    return {"reference_flat_noise": reference.flat.mean,
            "reference_flat_noise_skipped": reference.flat.skipped}


def compute_win_rates(cfg: EvalConfig, scores: Scores) -> tuple[list[dict], list[str]]:
    """Win rate of a over b for each configured pair, judged by `cfg.judge_name()`.

    Returns (win rates, problems): a pair without any item scored on both sides is a problem
    (e.g. the judge failed on every image), not a crash that loses the other figures.
    """
    judge = cfg.judge_name()
    wr = cfg.win_rates
    trained = {row_label(m.name, s): m.trained_on for m, s in cfg.rows()}
    out, problems = [], []
    for a, b in cfg.win_rate_pairs():
        try:
            result = win_rate(
                a, b, scores[a][judge], scores[b][judge], judge,
                method=wr.method, confidence=wr.confidence,
                bootstrap_samples=wr.bootstrap_samples,
            )
        except ValueError as err:
            problems.append(f"win rate {a} vs {b}: {err}")
            continue
        judge_trained = [label for label in (a, b) if judge in trained[label]]
        out.append(result.as_dict() | {"judge_trained": judge_trained})
    return out, problems
