"""Writers of the evaluation outputs (orchestration/evaluation/report.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from orchestration.evaluation.report import (
    GRID_GAP,
    EvalResults,
    RowResult,
    image_grid,
    markdown_report,
    markdown_table,
    plot_metrics_vs_steps,
    write_json,
)


def _summary(mean, groups):
    return {"mean": mean, "std": 0.1, "n": 4, "missing": 0, "groups": groups}


def _results() -> EvalResults:
    teacher = RowResult("teacher@50", "teacher", "teacher", "ddim", 50, 100, 7.5,
                        scores={"judge": _summary(7.25, {"anime": 7.0, "photo": 7.5})},
                        fid=12.3456, hf_noise_ratio=1.02)
    lcm2 = RowResult("rg-lcm@2", "rg-lcm", "lcm", "lcm", 2, 2, 8.5,
                     scores={"judge": _summary(8.0, {"anime": 8.5, "photo": None})},
                     fid=float("nan"), hf_noise_ratio=None)
    lcm4 = RowResult("rg-lcm@4", "rg-lcm", "lcm", "lcm", 4, 4, 8.5,
                     scores={"judge": _summary(8.5, {"anime": 8.0, "photo": 9.0})},
                     fid=10.0, hf_noise_ratio=1.5)
    win = {"a": "rg-lcm@2", "b": "teacher@50", "judge": "judge", "wins": 6, "losses": 3,
           "ties": 1, "n": 10, "win_rate": 0.65, "ci_low": 0.35, "ci_high": 0.86,
           "method": "wilson", "confidence": 0.95}
    return EvalResults([teacher, lcm2, lcm4], ["judge"], ["anime", "photo"], [win],
                       meta={"num_prompts": 2, "seeds": [0, 1], "scoring": "in-process"})


def test_markdown_table_rows_and_cells():
    lines = markdown_table(_results()).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["Model", "Steps", "UNet calls", "judge (mean)", "FID", "HF-noise ratio"]
    assert lines[1] == "|---|---|---|---|---|---|"
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert cells == [
        ["teacher (ddim, CFG 7.5)", "50", "100", "7.250", "12.35", "1.02"],
        ["rg-lcm (LCM, w+1 = 8.5)", "2", "2", "8.000", "n/a", "n/a"],
        ["rg-lcm (LCM, w+1 = 8.5)", "4", "4", "8.500", "10.00", "1.50"],
    ]


def test_markdown_report_has_groups_win_rates_and_grids():
    text = markdown_report(_results(), ["grid_seed0.png"])
    assert "## judge per prompt group" in text
    assert "| rg-lcm | 2 | 8.500 | n/a |" in text
    assert "| rg-lcm@2 | teacher@50 | judge | 6 | 1 | 3 | 0.650 | [0.350, 0.860] (wilson, 95%) |" in text
    assert "![grid_seed0.png](grid_seed0.png)" in text
    assert "Columns, left to right: teacher@50, rg-lcm@2, rg-lcm@4." in text


def test_write_json_is_strict_and_complete(tmp_path):
    path = tmp_path / "results.json"
    write_json(_results(), path)
    data = json.loads(path.read_text())  # NaN would not survive allow_nan=False
    assert [r["label"] for r in data["rows"]] == ["teacher@50", "rg-lcm@2", "rg-lcm@4"]
    assert data["rows"][1]["fid"] is None
    assert data["rows"][0]["scores"]["judge"]["groups"] == {"anime": 7.0, "photo": 7.5}
    assert data["win_rates"][0]["n"] == 10 and data["seeds"] == [0, 1]


def test_image_grid_layout():
    cols = [np.full((3, 4, 5, 3), c, dtype=np.uint8) for c in (10, 20)]
    grid = image_grid(cols, scale=2)
    assert grid.shape == (3 * 8 + 2 * GRID_GAP, 2 * 10 + GRID_GAP, 3)
    assert (grid[:8, :10] == 10).all() and (grid[:8, 10 + GRID_GAP:] == 20).all()
    assert (grid[8 : 8 + GRID_GAP] == 255).all()  # the gap between rows is white
    with pytest.raises(ValueError, match="same count"):
        image_grid([cols[0], cols[1][:2]])


def test_plot_metrics_vs_steps_writes_a_png(tmp_path):
    path = tmp_path / "plot.png"
    plot_metrics_vs_steps(_results(), path)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > image.size[1] > 100


def test_trained_on_columns_and_judges_are_marked():
    results = _results()
    results.rows[1].trained_on = ["judge"]
    results.win_rates[0]["judge_trained"] = ["rg-lcm@2"]
    text = markdown_report(results, [])
    assert "| rg-lcm (LCM, w+1 = 8.5) | 2 | 2 | 8.000 * | n/a | n/a |" in text
    assert "| teacher (ddim, CFG 7.5) | 50 | 100 | 7.250 | 12.35 | 1.02 |" in text
    assert "| rg-lcm@2 | teacher@50 | judge * | 6 |" in text
    assert "rg-lcm@2 vs teacher@50: rg-lcm@2" in text and "not a held-out one" in text
    assert "not a held-out" not in markdown_report(_results(), [])
