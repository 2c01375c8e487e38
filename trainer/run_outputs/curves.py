"""Training curves from ``metrics.jsonl``: a PNG for report.md and the LRM agreement trend.

``lrm_expert_agreement`` is measured on each update's triplets *before* the LRM trains on
them (trainer/reward/lrm_hook.py), and every triplet is new (fresh noise and student outputs), so
it is a held-out agreement, progressively validated; binned means over the run show whether
the proxy learns the expert's preferences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CURVES_FILE = "curves.png"
PANELS = (
    ("lcd_loss", "L_LCD"),
    ("reward_mean", "student reward (mean R)"),
    ("lrm_expert_agreement", "LRM-expert agreement (held-out pairs)"),
    ("lrm_loss", "LRM KL loss"),
)


def binned(rows: list[dict], key: str, bins: int = 6) -> list[tuple[float, float]]:
    """(mean step, mean value) of `key` over `bins` consecutive, equally sized groups of the
    rows that have it; fewer groups when there are fewer rows."""
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float)]
    if not points:
        return []
    groups = np.array_split(np.asarray(points, dtype=float), min(bins, len(points)))
    return [(float(g[:, 0].mean()), float(g[:, 1].mean())) for g in groups if len(g)]


def agreement_trend(rows: list[dict]) -> tuple[float, float] | None:
    """Mean LRM-expert agreement over the first and the last third of the logged updates."""
    values = [r["lrm_expert_agreement"] for r in rows if "lrm_expert_agreement" in r]
    if len(values) < 3:
        return None
    third = len(values) // 3
    return float(np.mean(values[:third])), float(np.mean(values[-third:]))


def plot_curves(rows: list[dict], path: str | Path) -> Path | None:
    """Raw values (thin) and binned means (thick) for each metric present; None if none is."""
    panels = [(key, title) for key, title in PANELS if any(key in r for r in rows)]
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels, strict=True):
        raw = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot(*zip(*raw, strict=True), lw=0.6, alpha=0.4)
        ax.plot(*zip(*binned(rows, key), strict=True), lw=2, marker="o")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
