"""Benchmark: wall time of the README's test command, with the suite's own profile.

    python -m orchestration.bench suite

Runs `make test` (lint, the browser and ImageReward environments when missing, then pytest)
in a fresh process and reads what it prints: the pytest wall time, the count of passed tests
and the slowest calls (pytest's --durations, set in pyproject.toml). The goal is the pytest
wall time on this machine; the environments are built once and not counted.
"""

from __future__ import annotations

import re
import subprocess

from orchestration.bench.table import Row
from orchestration.paths import REPO_ROOT

GOAL_S = 300.0
WALL = re.compile(r"test suite wall time: (\d+) s")
# pytest's last line, e.g. "== 1 failed, 610 passed, 21 warnings in 612.50s (0:10:12) ==".
SUMMARY = re.compile(r"^=* ?(\d+ \w+(?:, \d+ \w+)*) in ([\d.]+)s", re.MULTILINE)
COUNT = re.compile(r"(\d+) (\w+)")
DURATION = re.compile(r"^\s*([\d.]+)s (call|setup|teardown)\s+(\S.*?)\s*$")


def parse_output(text: str) -> dict:
    """Wall time, counts and the slowest phases from `make test`'s output (ValueError when
    pytest printed no summary: the run did not get that far)."""
    summary = list(SUMMARY.finditer(text))
    wall = WALL.search(text)
    if not summary or not wall:
        raise ValueError(f"make test printed no pytest summary:\n{text[-2000:]}")
    counts = {kind: int(n) for n, kind in COUNT.findall(summary[-1].group(1))}
    slowest = [(float(m.group(1)), m.group(2), m.group(3))
               for m in map(DURATION.match, text.splitlines()) if m]
    return {"wall_s": int(wall.group(1)), "passed": counts.get("passed", 0),
            "failed": sum(counts.get(k, 0) for k in ("failed", "error", "errors")),
            "pytest_s": float(summary[-1].group(2)), "slowest": slowest}


def run(args):
    """(table rows, markdown details) of the test-suite benchmark."""
    proc = subprocess.run(["make", "test"], cwd=REPO_ROOT, capture_output=True, text=True)
    figures = parse_output(proc.stdout + proc.stderr)
    ok = proc.returncode == 0 and figures["failed"] == 0
    lines = [f"**Test suite** (`make test`: {figures['passed']} passed, {figures['failed']} "
             f"failed, pytest {figures['pytest_s']:.0f} s; slowest phases, which sum to "
             f"{sum(s for s, _, _ in figures['slowest']):.0f} s)", "",
             "| seconds | phase | test |", "|---|---|---|"]
    lines += [f"| {s:.1f} | {phase} | `{test}` |" for s, phase, test in figures["slowest"]]
    row = Row(
        "test suite wall time (`make test`)",
        f"{figures['passed']} passed, {figures['failed']} failed"
        + ("" if proc.returncode == 0 else f", exit {proc.returncode}"),
        f"{figures['wall_s']} s", f"<= {GOAL_S:.0f} s", ok and figures["wall_s"] <= GOAL_S,
        "python -m orchestration.bench suite",
    )
    return [row], "\n".join(lines)
