"""Report math (orchestration/studies/human/report.py) on hand-made answers."""

import pytest

from orchestration.evaluation.stats import wilson_interval
from orchestration.studies.human.report import (
    markdown,
    rater_summary,
    reward_agreement,
    win_rates,
    write_report,
)

STUDY = {
    "pairs": [["rg@2", "teacher@50"]],
    "trained_on": {"rg@2": ["judge"], "teacher@50": []},
    "items": [
        {"id": "c0", "kind": "pair", "a": "rg@2", "b": "teacher@50", "scores": {
            "judge": [9.0, 5.0], "clip": [0.1, 0.3]}},
        {"id": "c1", "kind": "pair", "a": "rg@2", "b": "teacher@50", "scores": {
            "judge": [4.0, 4.0], "clip": [0.5, 0.2]}},
        {"id": "c2", "kind": "pair", "a": "rg@2", "b": "teacher@50", "scores": {
            "judge": [2.0, 8.0], "clip": [None, 0.2]}},
        {"id": "x0", "kind": "attention", "a": "rg@2", "b": "blank", "scores": {}},
    ],
}


def _answer(rater, position, item, p, v, a, repeat=False):
    return {"rater": rater, "position": position, "item": item, "repeat": int(repeat),
            "a_side": "left", "preference": p, "visual": v, "alignment": a}


ANSWERS = [
    _answer("r1", 0, "c0", "a", "a", "a"),
    _answer("r1", 1, "c1", "b", "tie", "a"),
    _answer("r1", 2, "x0", "a", "a", "a"),
    _answer("r1", 3, "c0", "a", "b", "a", repeat=True),  # Q2 flips: 2 of 3 agree
    _answer("r2", 0, "c2", "b", "b", "tie"),
    _answer("r2", 1, "x0", "a", "tie", "a"),  # fails the check
    _answer("r2", 2, "c0", "tie", "a", "a"),
]


def test_win_rates_count_first_showings_ties_half():
    rates = {w["question"]: w for w in win_rates(STUDY, ANSWERS)}
    pref = rates["preference"]  # c0 a, c1 b, c2 b, c0 (r2) tie; the repeat is left out
    assert (pref["wins"], pref["ties"], pref["losses"], pref["n"]) == (1, 1, 2, 4)
    assert pref["win_rate"] == pytest.approx(1.5 / 4)
    assert (pref["ci_low"], pref["ci_high"]) == pytest.approx(wilson_interval(1.5, 4))
    assert rates["alignment"]["win_rate"] == pytest.approx(3.5 / 4)


def test_raters_consistency_and_attention():
    r1, r2 = rater_summary(STUDY, ANSWERS)
    assert r1 == {"rater": "r1", "answered": 4, "repeats": 1, "consistency": pytest.approx(2 / 3),
                  "attention_checks": 1, "attention_pass_rate": 1.0}
    assert r2["consistency"] is None and r2["attention_pass_rate"] == 0.0


def test_reward_agreement_over_non_tie_answers():
    rows = {r["scorer"]: r for r in reward_agreement(STUDY, ANSWERS)}
    # preference, non-ties: c0 a (judge a, clip b), c1 b (judge tie, clip a), c2 b (judge b,
    # clip missing); r2's c0 is a tie and is left out
    assert rows["judge"]["preference"] == {"agree": 2, "n": 3, "rate": pytest.approx(2 / 3)}
    assert rows["clip"]["preference"] == {"agree": 0, "n": 2, "rate": 0.0}
    assert rows["judge"]["trained_on_by"] == ["rg@2"] and rows["clip"]["trained_on_by"] == []


def test_report_files(tmp_path):
    files = write_report(tmp_path, STUDY, ANSWERS)
    text = files["markdown"].read_text()
    assert "| rg@2 | teacher@50 | Q1 General preference | 1 | 1 | 2 | 4 | 0.375 |" in text
    assert "| r1 | 4 | 1 | 66.7% | 1 | 100.0% |" in text
    assert "| judge | 66.7% (n=3) |" in text and "| rg@2 |" in text
    assert files["plot"].read_bytes()[:4] == b"\x89PNG"
    empty = markdown({"study": "s", "answers": 0, "win_rates": win_rates(STUDY, []),
                      "raters": [], "reward_agreement": reward_agreement(STUDY, [])})
    assert "| 0 | n/a | n/a |" in empty
