"""Writers of the evaluation outputs (orchestration/evaluation/report.py, grid.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from orchestration.evaluation.grid import (
    GRID_GAP,
    ROW_LABEL_WIDTH,
    fit_lines,
    grid_shape,
    header_height,
    image_grid,
    labelled_grid,
    tile_origin,
)
from orchestration.evaluation.report import (
    EvalResults,
    RowResult,
    markdown_report,
    markdown_table,
    plot_metrics_vs_steps,
    write_json,
    write_outputs,
)


def _summary(mean, groups):
    return {"mean": mean, "std": 0.1, "n": 4, "missing": 0, "groups": groups}


def _results() -> EvalResults:
    teacher = RowResult("teacher@50", "teacher", "teacher", "ddim", 50, 100, 7.5,
                        scores={"judge": _summary(7.25, {"anime": 7.0, "photo": 7.5})},
                        fid=12.3456, hf_noise_ratio=1.02, flat_noise=0.5)
    lcm2 = RowResult("rg-lcm@2", "rg-lcm", "lcm", "lcm", 2, 2, 8.5,
                     scores={"judge": _summary(8.0, {"anime": 8.5, "photo": None})},
                     fid=float("nan"), hf_noise_ratio=None, flat_noise=None)
    lcm4 = RowResult("rg-lcm@4", "rg-lcm", "lcm", "lcm", 4, 4, 8.5,
                     scores={"judge": _summary(8.5, {"anime": 8.0, "photo": 9.0})},
                     fid=10.0, hf_noise_ratio=1.5, flat_noise=6.25, flat_noise_skipped=2)
    win = {"a": "rg-lcm@2", "b": "teacher@50", "judge": "judge", "wins": 6, "losses": 3,
           "ties": 1, "n": 10, "win_rate": 0.65, "ci_low": 0.35, "ci_high": 0.86,
           "method": "wilson", "confidence": 0.95}
    return EvalResults([teacher, lcm2, lcm4], ["judge"], ["anime", "photo"], [win],
                       meta={"num_prompts": 2, "seeds": [0, 1], "scoring": "in-process",
                             "reference_flat_noise": 0.125})


def test_markdown_table_rows_and_cells():
    lines = markdown_table(_results()).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["Model", "Steps", "UNet calls", "judge (mean)", "FID", "HF-noise ratio",
                      "Flat-region noise"]
    assert lines[1] == "|---|---|---|---|---|---|---|"
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:5]]
    assert cells == [
        ["teacher (ddim, CFG 7.5)", "50", "100", "7.250", "12.35", "1.02", "0.50"],
        ["rg-lcm (LCM, w+1 = 8.5)", "2", "2", "8.000", "n/a", "n/a", "n/a"],
        ["rg-lcm (LCM, w+1 = 8.5)", "4", "4", "8.500", "10.00", "1.50", "6.25"],
    ]
    note = lines[6]  # what the column is, the level of clean images, the images left out
    assert note.startswith("Flat-region noise: RMS deviation") and "not with sharper edges" in note
    assert "Reference images: 0.12." in note and "left out of the mean: rg-lcm@4: 2." in note


def test_flat_noise_note_only_with_the_column():
    results = _results()
    for row in results.rows:
        row.flat_noise, row.flat_noise_skipped = None, 0
    results.meta.pop("reference_flat_noise")
    assert "Flat-region noise:" not in markdown_table(results)


def test_markdown_report_has_groups_win_rates_and_grids():
    text = markdown_report(_results(), ["grid_seed0.png"])
    assert "## judge per prompt group" in text
    assert "| rg-lcm | 2 | 8.500 | n/a |" in text
    assert "| rg-lcm@2 | teacher@50 | judge | 6 | 1 | 3 | 0.650 | [0.350, 0.860] (wilson, 95%) |" in text
    assert "![grid_seed0.png](grid_seed0.png)" in text
    assert "Columns, left to right: teacher@50, rg-lcm@2, rg-lcm@4." in text
    listed = markdown_report(_results(), ["grid_seed0.png"], ["a red circle", "a blue square"])
    assert "\n1. a red circle\n2. a blue square\n" in listed  # the grid's rows, top to bottom


def test_write_json_is_strict_and_complete(tmp_path):
    path = tmp_path / "results.json"
    write_json(_results(), path)
    data = json.loads(path.read_text())  # NaN would not survive allow_nan=False
    assert [r["label"] for r in data["rows"]] == ["teacher@50", "rg-lcm@2", "rg-lcm@4"]
    assert data["rows"][1]["fid"] is None
    assert data["rows"][2]["flat_noise"] == 6.25 and data["rows"][2]["flat_noise_skipped"] == 2
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


def _tiles(rows=2, cols=3, size=8) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (rows, size, size, 3), dtype=np.uint8) for _ in range(cols)]


def _ink(region: np.ndarray) -> bool:
    return bool((region < 128).any())


def test_labelled_grid_keeps_every_tile_and_labels_columns_and_rows():
    cols, scale = _tiles(), 4
    labels = [("teacher", "50 steps"), ("rg-lcm", "2 steps"), ("rg-lcm", "4 steps")]
    prompts = ["a red circle on a blue background", "a small green square"]
    grid = labelled_grid(cols, labels, prompts, scale)
    tile = 8 * scale
    assert grid.shape == (*grid_shape(2, 3, tile, tile), 3)
    for c, stack in enumerate(cols):  # the samples' pixels, upscaled, unchanged
        for r in range(2):
            y, x = tile_origin(r, c, tile, tile)
            expected = stack[r].repeat(scale, axis=0).repeat(scale, axis=1)
            assert np.array_equal(grid[y : y + tile, x : x + tile], expected)
    top = header_height()
    for c in range(3):  # each column's header and each row's label hold text
        x = tile_origin(0, c, tile, tile)[1]
        assert _ink(grid[:top, x : x + tile])
    for r in range(2):
        y = tile_origin(r, 0, tile, tile)[0]
        assert _ink(grid[y : y + tile, :ROW_LABEL_WIDTH])
    with pytest.raises(ValueError, match="one label per column and per row"):
        labelled_grid(cols, labels[:2], prompts, scale)


def test_labels_are_cut_to_fit():
    text = "a large yellow triangle on a white background beside a small red circle"
    lines = fit_lines(text, 60, 2)
    assert len(lines) == 2 and lines[-1].endswith("...")
    assert fit_lines("teacher", 200, 2) == ["teacher"]
    assert len(fit_lines("x" * 80, 30, 3)) == 3  # a word wider than the space is split


def test_write_outputs_labels_its_grids_and_lists_their_prompts(tmp_path):
    results = _results()
    prompts = ["a red circle", "a blue square"]
    images = {r.label: np.zeros((4, 8, 8, 3), dtype=np.uint8) for r in results.rows}
    files = write_outputs(tmp_path, results, images, prompts * 2, [0, 0, 1, 1],
                          grid_prompts=8, grid_scale=2)
    with Image.open(files["grid_seed1"]) as grid:
        assert grid.size[::-1] == grid_shape(2, 3, 16, 16)
        assert _ink(np.asarray(grid)[: header_height()])
    text = (tmp_path / "table.md").read_text()
    assert "1. a red circle\n2. a blue square" in text


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
    assert "| rg-lcm (LCM, w+1 = 8.5) | 2 | 2 | 8.000 * | n/a | n/a | n/a |" in text
    assert "| teacher (ddim, CFG 7.5) | 50 | 100 | 7.250 | 12.35 | 1.02 | 0.50 |" in text
    assert "| rg-lcm@2 | teacher@50 | judge * | 6 |" in text
    assert "rg-lcm@2 vs teacher@50: rg-lcm@2" in text and "not a held-out one" in text
    assert "not a held-out" not in markdown_report(_results(), [])
