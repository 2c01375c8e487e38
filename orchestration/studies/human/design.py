"""What a study shows: its questions, its items and each rater's seeded schedule (pure).

An item is one head-to-head comparison: the images of rows A and B (`name@steps`) for the
same prompt and seed, or an attention check (an image against a blank of its size: the
obvious answer is the image on every question). A rater's schedule shows every item once in
a random order with a random side for A, and `repeats` items a second time, later, with the
sides swapped: the share of repeated answers that agree is the rater's consistency. The order
and sides come from `rater_seed(study seed, rater)`, recorded with the answers.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

# The paper's three questions (section 5.1), in its numbering.
QUESTIONS = (
    ("preference", "Q1 General preference", "Which image do you prefer given the prompt?"),
    ("visual", "Q2 Visual appeal", "Which image is more visually appealing, irrespective of "
     "the prompt?"),
    ("alignment", "Q3 Prompt alignment", "Which image better matches the text description?"),
)
QUESTION_KEYS = tuple(q[0] for q in QUESTIONS)
CHOICES = ("left", "tie", "right")
RATER_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def parse_pair(spec: str) -> tuple[str, str]:
    """'A@2:B@4' -> ('A@2', 'B@4'); ValueError that says the expected form."""
    parts = spec.split(":")
    if len(parts) != 2 or not all(re.fullmatch(r"[^@:\s]+@\d+", p) for p in parts):
        raise ValueError(f"--pairs {spec!r}: expected ROW_A:ROW_B with rows as name@steps, "
                         "e.g. rg-lcm@2:teacher@50")
    if parts[0] == parts[1]:
        raise ValueError(f"--pairs {spec!r}: a row against itself compares nothing")
    return parts[0], parts[1]


def check_rater_ids(raters: list[str]) -> list[str]:
    bad = [r for r in raters if not RATER_PATTERN.match(r)]
    if bad or not raters:
        raise ValueError(f"rater ids {bad or raters} must be 1-64 letters, digits, '_' or '-'")
    if len(set(raters)) != len(raters):
        raise ValueError(f"rater ids {raters} have duplicates")
    return raters


def pick_items(common: list[int], per_pair: int | None, rng: np.random.Generator) -> list[int]:
    """Up to `per_pair` of the items both rows have, drawn without replacement, sorted."""
    if per_pair is None or per_pair >= len(common):
        return sorted(common)
    return sorted(int(i) for i in rng.choice(common, size=per_pair, replace=False))


def rater_seed(study_seed: int, rater: str) -> int:
    """A stable 63-bit seed per (study, rater): sha256, not Python's salted hash()."""
    digest = hashlib.sha256(f"{study_seed}:{rater}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def rater_schedule(item_ids: list[str], pair_ids: list[str], repeats: int, seed: int) -> list[dict]:
    """Screens of one rater: [{"position", "item", "a_side", "repeat"}], in showing order.

    Every item once (shuffled, A on a random side); then `repeats` of the comparison items
    again with the sides swapped, each inserted at a random place after its first showing.
    """
    rng = np.random.default_rng(seed)
    order = [item_ids[i] for i in rng.permutation(len(item_ids))]
    sides = {item: ("left", "right")[int(rng.integers(2))] for item in order}
    screens = [{"item": item, "a_side": sides[item], "repeat": False} for item in order]
    again = [pair_ids[i] for i in sorted(rng.choice(len(pair_ids), min(repeats, len(pair_ids)),
                                                    replace=False))]
    for item in again:
        first = next(k for k, s in enumerate(screens) if s["item"] == item)
        where = int(rng.integers(first + 1, len(screens) + 1))
        swapped = "right" if sides[item] == "left" else "left"
        screens.insert(where, {"item": item, "a_side": swapped, "repeat": True})
    return [{"position": k, **s} for k, s in enumerate(screens)]


def to_ab(choice: str, a_side: str) -> str:
    """A screen's 'left' / 'tie' / 'right' -> 'a' / 'tie' / 'b' given where A was shown."""
    if choice not in CHOICES:
        raise ValueError(f"answer {choice!r} must be one of {CHOICES}")
    if choice == "tie":
        return "tie"
    return "a" if choice == a_side else "b"
