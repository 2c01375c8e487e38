"""Prompt families and the per-family table of the headroom study (no sampling)."""

import numpy as np

from orchestration.studies.headroom import captions_per_family, families, markdown, table


def test_captions_per_family_is_stratified_and_fixed():
    captions = captions_per_family(3)
    assert len(captions) == 3 * 8 and captions == captions_per_family(3)
    masks = families(captions)
    assert masks["every prompt"].all() and masks["small cross"].sum() == 3
    assert masks["small"].sum() == 12 and masks["cross"].sum() == 6


def test_table_reports_each_family_and_judge():
    prompts = captions_per_family(2)
    rights = {"toy-judge": np.ones((16, 5), bool), "heldout-judge": np.zeros((16, 5), bool)}
    result = table(rights, prompts)
    assert result["large square"]["n"] == 2
    assert result["large square"]["toy-judge"]["all"] == 1.0
    assert result["large square"]["heldout-judge"]["shape"] == 0.0
    assert "| small cross | 2 | heldout-judge | 0.0 |" in markdown(result, [0], 2)
