"""The protocol's config checks, its lock, and its comparison statistics (no training)."""

import json

import numpy as np
import pytest

from orchestration.studies.protocol import compare, markdown, parse_args
from orchestration.studies.protocol_config import check_lock, load_protocol, write_lock


def _cfg(**changes):
    data = load_protocol().model_dump() | changes
    return type(load_protocol()).model_validate(data)


def test_committed_protocol_is_valid_and_locked():
    cfg = load_protocol()
    assert len(cfg.training_seeds) >= 3
    check_lock(cfg)  # the committed lock matches the committed files


def test_splits_must_be_disjoint_and_seeds_at_least_three():
    splits = load_protocol().model_dump()["splits"]
    splits["test"]["sampling_seeds"] = splits["selection"]["sampling_seeds"]
    with pytest.raises(ValueError, match="disjoint"):
        _cfg(splits=splits)
    with pytest.raises(ValueError, match="training_seeds"):
        _cfg(training_seeds=[0, 1])
    with pytest.raises(ValueError, match="comparison"):
        _cfg(comparisons=["rglcd@2:nobody@4"])


def test_lock_names_the_changed_file(tmp_path):
    cfg = load_protocol()
    path = tmp_path / "protocol.yaml"
    lock = write_lock(cfg, path)
    check_lock(cfg, path)
    frozen = json.loads(lock.read_text())
    frozen["configs/toy-rglcd-lrm-toy-judge.yaml"] = "0" * 64
    lock.write_text(json.dumps(frozen))
    with pytest.raises(ValueError, match="configs/toy-rglcd-lrm-toy-judge.yaml"):
        check_lock(cfg, path)
    lock.unlink()
    with pytest.raises(ValueError, match="--freeze"):
        check_lock(cfg, path)


def test_test_split_takes_no_overrides():
    with pytest.raises(SystemExit):
        parse_args(["--split", "test", "--set", "lcd.max_steps=2"])


def test_compare_corrects_every_test_of_the_family():
    cfg = load_protocol()
    rng = np.random.default_rng(0)
    rows = {}
    for seed in cfg.training_seeds:
        rows[f"rglcd-s{seed}@2"] = rng.normal(1.0, 1, 90)
        rows[f"rglcd-s{seed}@4"] = rng.normal(0.0, 1, 90)
        rows[f"lcd-s{seed}@4"] = rng.normal(0.0, 1, 90)
    rows["teacher-s0@50"] = rng.normal(0.0, 1, 90)
    results = compare(cfg, {j: rows for j in cfg.judges}, samples=300)
    assert len(results) == len(cfg.comparisons) * len(cfg.judges)
    for r in results:
        assert r["p_holm"] >= r["p_value"]
        assert r["confidence"] == pytest.approx(1 - cfg.alpha / len(results))
    verdicts = {(r["a"], r["b"]): r["verdict"] for r in results}
    assert verdicts[("rglcd@2", "teacher@50")] == "A better"
    assert verdicts[("rglcd@4", "lcd@4")] == "no difference shown"
    table = markdown(results, cfg, parse_args(["--split", "selection"]))
    assert "Holm" in table and "| rglcd@2 | teacher@50 | toy-judge |" in table
