"""orchestration/studies/toy_judge_breakdown.py on the committed toy teacher (in-process, tiny)."""

from __future__ import annotations

import json

from orchestration.studies.toy_judge_breakdown import main
from rglcd.toy.paths import TOY_PIPELINE_DIR


def test_breakdown_prints_attribute_accuracy_and_subscores(capsys):
    rows = main([str(TOY_PIPELINE_DIR), "--teacher", "--steps", "2", "8", "--seeds", "0",
                 "--prompts", "4"])
    assert [r["steps"] for r in rows] == [2, 8]
    for row in rows:
        for key in ("colour_accuracy", "shape_accuracy", "size_accuracy", "bg_accuracy"):
            assert 0.0 <= row[key] <= 1.0
        assert 0.0 <= row["overall"] <= 10.0
    # 8 DDIM steps draw the right colours far more often than 2 (0.00 / 3.47 judge at 2 / 4).
    assert rows[1]["colour_accuracy"] > rows[0]["colour_accuracy"]
    for row in rows:  # every wrong attribute is counted once, under what was wanted and seen
        wrong = sum(round((1 - row[f"{a}_accuracy"]) * 4) for a in ("colour", "shape", "size", "bg"))
        assert sum(row["errors"].values()) == wrong
        assert all(" " in k and "->" in k for k in row["errors"])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == rows
