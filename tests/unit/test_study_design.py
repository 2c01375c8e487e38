"""Study design (orchestration/studies/human/design.py): pair specs and each rater's schedule."""

import pytest

from orchestration.studies.human.design import (
    check_rater_ids,
    parse_pair,
    rater_schedule,
    rater_seed,
    to_ab,
)

ITEMS = [f"c{i:03d}" for i in range(10)] + ["x000", "x001"]
PAIRS = ITEMS[:10]


def test_parse_pair_and_bad_specs():
    assert parse_pair("rg-lcm@2:teacher@50") == ("rg-lcm@2", "teacher@50")
    for bad in ("rg-lcm@2", "a@2:b", "a@2:b@4:c@8", "a@2:a@2"):
        with pytest.raises(ValueError, match="--pairs"):
            parse_pair(bad)


def test_rater_ids():
    assert check_rater_ids(["r1", "alice_2"]) == ["r1", "alice_2"]
    for bad in (["r 1"], ["r1", "r1"], [], ["x" * 65]):
        with pytest.raises(ValueError, match="rater ids"):
            check_rater_ids(bad)


def test_schedule_shows_every_item_once_and_repeats_later_swapped():
    screens = rater_schedule(ITEMS, PAIRS, repeats=3, seed=rater_seed(0, "r1"))
    assert [s["position"] for s in screens] == list(range(len(ITEMS) + 3))
    firsts = [s for s in screens if not s["repeat"]]
    assert sorted(s["item"] for s in firsts) == sorted(ITEMS)
    repeats = [s for s in screens if s["repeat"]]
    assert len(repeats) == 3 and all(s["item"] in PAIRS for s in repeats)
    for again in repeats:
        first = next(s for s in firsts if s["item"] == again["item"])
        assert first["position"] < again["position"] and first["a_side"] != again["a_side"]
    sides = {s["a_side"] for s in firsts}
    assert sides == {"left", "right"}


def test_schedule_is_seeded_per_rater():
    one = rater_schedule(ITEMS, PAIRS, 3, rater_seed(0, "r1"))
    assert one == rater_schedule(ITEMS, PAIRS, 3, rater_seed(0, "r1"))
    assert one != rater_schedule(ITEMS, PAIRS, 3, rater_seed(0, "r2"))
    assert one != rater_schedule(ITEMS, PAIRS, 3, rater_seed(1, "r1"))
    assert rater_seed(0, "r1") == 5846798335155637947  # sha256: stable across processes


def test_to_ab():
    assert to_ab("left", "left") == "a" and to_ab("left", "right") == "b"
    assert to_ab("right", "right") == "a" and to_ab("tie", "left") == "tie"
    with pytest.raises(ValueError, match="must be one of"):
        to_ab("both", "left")
