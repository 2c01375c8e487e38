"""Training curves and the LRM agreement trend from metrics rows (trainer/run_outputs/curves.py)."""

from __future__ import annotations

from trainer.run_outputs.curves import agreement_trend, binned, plot_curves


def rows(n=30):
    out = []
    for step in range(n):
        row = {"step": step, "lcd_loss": 1.0 / (1 + step)}
        if step % 2:
            row["lrm_expert_agreement"] = 0.5 + step / (2 * n)
        out.append(row)
    return out


def test_binned_means_cover_every_row_once():
    points = binned(rows(), "lcd_loss", bins=5)
    assert len(points) == 5
    assert points[0][0] == 2.5  # steps 0..5
    assert [p[1] for p in points] == sorted((p[1] for p in points), reverse=True)
    assert binned(rows(), "missing") == []


def test_agreement_trend_first_and_last_third():
    first, last = agreement_trend(rows())
    assert first < last
    values = [r["lrm_expert_agreement"] for r in rows() if "lrm_expert_agreement" in r]
    assert first == sum(values[:5]) / 5 and last == sum(values[-5:]) / 5
    assert agreement_trend(rows(4)) is None  # fewer than 3 updates: no trend


def test_plot_writes_a_png_only_when_there_is_something_to_plot(tmp_path):
    path = plot_curves(rows(), tmp_path / "curves.png")
    assert path is not None and path.read_bytes()[:4] == b"\x89PNG"
    assert plot_curves([{"step": 0}], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
