"""The run report, ``<output_dir>/report.md``: what a run did, in one page.

``summarize_metrics`` condenses ``metrics.jsonl`` (steps, final losses and reward means over
the last steps, summed counters such as skipped reward updates, median phase timings);
``write_run_report`` renders it with the config's differences from the defaults and the
paths of the exported pipeline, checkpoints and sample grids.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rglcd import storage
from trainer.run_outputs.monitoring import (
    COUNTER_KEYS,
    METRICS_FILE,
    SKIPPED_REWARD_UPDATES,
    read_metrics,
)

REPORT_FILE = "report.md"
TIMING_PREFIX = "time_"


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def summarize_metrics(
    rows: Sequence[Mapping[str, Any]], last_n: int = 10, counter_keys: Sequence[str] = COUNTER_KEYS
) -> dict:
    """Summary of per-step metric rows (each with a "step").

    Returns ``{"num_steps", "first_step", "last_step", "final": {key: mean of the last
    `last_n` values}, "counters": {key: sum}, "timing_median_s": {phase: median seconds}}``.
    Phase times are medians: the first step's wait for data would dominate a mean.
    Counter keys never logged are absent from "counters" (reported as "not recorded").
    """
    rows = sorted(rows, key=lambda row: row["step"])
    if not rows:
        return {"num_steps": 0, "final": {}, "counters": {}, "timing_median_s": {}}
    series: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            if key != "step" and _numeric(value):
                series.setdefault(key, []).append(float(value))
    final = {
        k: sum(v[-last_n:]) / len(v[-last_n:])
        for k, v in series.items()
        if k not in counter_keys and not k.startswith(TIMING_PREFIX)
    }
    return {
        "num_steps": len(rows),
        "first_step": rows[0]["step"],
        "last_step": rows[-1]["step"],
        "final": final,
        "counters": {k: sum(series[k]) for k in counter_keys if k in series},
        "timing_median_s": {
            k.removeprefix(TIMING_PREFIX): statistics.median(v)
            for k, v in series.items()
            if k.startswith(TIMING_PREFIX)
        },
    }


def summarize_metrics_file(output_dir: str | Path, last_n: int = 10) -> dict:
    """``summarize_metrics`` of ``<output_dir>/metrics.jsonl``."""
    return summarize_metrics(
        read_metrics(storage.join(str(output_dir), METRICS_FILE)), last_n=last_n
    )


def _dump(config: Any) -> dict:
    if config is None:
        return {}
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    return dict(config)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves by dotted key, list items by index (`serve.scorers.0.kind`), as overrides name
    them; an empty mapping or list is a leaf of its own."""
    if isinstance(tree, Mapping) and tree:
        items = tree.items()
    elif isinstance(tree, (list, tuple)) and tree:
        items = enumerate(tree)
    else:
        return {prefix[:-1]: tree} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat |= _flatten(value, f"{prefix}{key}.")
    return flat


ABSENT = "(absent)"  # a list item or key that one side does not have


def config_diff(config: Any, defaults: Any) -> list[tuple[str, Any, Any]]:
    """``(dotted.key, default, value)`` for every leaf where `config` differs from `defaults`."""
    ours, base = _flatten(_dump(config)), _flatten(_dump(defaults))
    diff = []
    for key in sorted(set(ours) | set(base), key=_natural):
        value, default = ours.get(key, ABSENT), base.get(key, ABSENT)
        if value != default:
            diff.append((key, default, value))
    return diff


def _natural(key: str) -> list[tuple[int, Any]]:
    """Sort key: list indices numerically (`scorers.2` before `scorers.10`)."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in key.split(".")]


def _default_config(config: Any) -> Any:
    """The config class's defaults, when every field has one."""
    try:
        return type(config)() if hasattr(config, "model_dump") else None
    except (TypeError, ValueError):
        return None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return f"`{value}`" if isinstance(value, str) else str(value)


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines


def _config_section(config: Any, defaults: Any) -> list[str]:
    defaults = defaults if defaults is not None else _default_config(config)
    if defaults is None:
        return [
            "## Configuration",
            "",
            "Defaults unavailable; full configuration:",
            "",
            *_table(("key", "value"), list(_flatten(_dump(config)).items())),
            "",
        ]
    diff = config_diff(config, defaults)
    body = _table(("key", "default", "this run"), diff) if diff else ["All defaults."]
    return ["## Configuration (differences from the defaults)", "", *body, ""]


def _metrics_section(summary: Mapping[str, Any]) -> list[str]:
    if not summary.get("num_steps"):
        return ["## Training", "", "No metrics were recorded.", ""]
    lines = [
        "## Training",
        "",
        f"Steps logged: {summary['num_steps']} "
        f"(step {summary['first_step']} to {summary['last_step']}).",
        "",
    ]
    final = summary["final"]
    losses = [(k, v) for k, v in final.items() if "loss" in k]
    rewards = [(k, v) for k, v in final.items() if k.startswith("reward")]
    others = [(k, v) for k, v in final.items() if (k, v) not in losses + rewards]
    for title, rows in (("Losses", losses), ("Rewards", rewards), ("Other", others)):
        if rows:
            lines += [
                f"### {title} (mean of the last steps)",
                "",
                *_table(("metric", "value"), rows),
                "",
            ]
    skipped = summary["counters"].get(SKIPPED_REWARD_UPDATES)
    lines += [f"Skipped reward updates: {'not recorded' if skipped is None else int(skipped)}", ""]
    if summary["timing_median_s"]:
        timing = sorted(summary["timing_median_s"].items())
        lines += [
            "### Step time per phase (median seconds)",
            "",
            *_table(("phase", "seconds"), timing),
            "",
        ]
    return lines


def write_run_report(
    output_dir: str | Path,
    config: Any,
    metrics_summary: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    defaults: Any = None,
) -> str:
    """Write ``<output_dir>/report.md`` (a path or URI); return its location.

    `metrics_summary` defaults to ``summarize_metrics_file(output_dir)``. `extra` holds
    anything else worth a line, e.g. ``{"pipeline": path, "checkpoints": path, "sample
    grids": [paths], "wall time (s)": 512.3}``; sequences become bullet lists.
    `defaults` is the default config (a pydantic config's class defaults if omitted).
    """
    output_dir = str(output_dir)
    summary = metrics_summary if metrics_summary is not None else summarize_metrics_file(output_dir)
    lines = ["# RG-LCD run report", "", f"Output directory: `{output_dir}`", ""]
    lines += _config_section(config, defaults)
    lines += _metrics_section(summary)
    if extra:
        lines += ["## Outputs and timings", ""]
        for key, value in extra.items():
            if isinstance(value, list | tuple):
                lines += [f"- {key}:", *[f"  - {_fmt(str(v))}" for v in value]]
            else:
                lines.append(f"- {key}: {_fmt(str(value) if isinstance(value, Path) else value)}")
        lines.append("")
    location = storage.join(output_dir, REPORT_FILE)
    storage.write_text(location, "\n".join(lines))
    return location
