"""The benchmark table writer (orchestration/bench/table.py): text in, text out."""

from __future__ import annotations

import pytest

from orchestration.bench.table import (
    BEGIN,
    END,
    Row,
    render_block,
    render_table,
    replace_block,
    write_block,
)

ROWS = [
    Row("sampling", "2 vs 50 steps", "41.0x", ">= 40x", True, "python -m orchestration.bench x"),
    Row("service", "a | b", "3.10x", ">= 5x", False, "python -m orchestration.bench y"),
]


def test_table_has_one_line_per_row_with_verdict_and_escaped_cells():
    lines = render_table(ROWS).splitlines()
    assert lines[0].startswith("| benchmark | figure | ratio | goal | pass/fail |")
    assert len(lines) == 2 + len(ROWS)
    assert "| pass |" in lines[2] and "`python -m orchestration.bench x`" in lines[2]
    assert "| **fail** |" in lines[3]
    assert "a \\| b" in lines[3]  # a pipe in a cell does not split the row


def test_block_is_appended_once_then_replaced_in_place():
    block = render_block(ROWS, "context line", ["details"])
    assert block.startswith(BEGIN) and block.rstrip().endswith(END)
    first = replace_block("# Results\n\nWritten by hand.\n", block)
    assert first.startswith("# Results\n\nWritten by hand.\n\n" + BEGIN)
    later = first + "\n## After\nAlso by hand.\n"
    new_block = render_block(ROWS[:1], "other context")
    replaced = replace_block(later, new_block)
    assert replaced.count(BEGIN) == replaced.count(END) == 1
    assert "other context" in replaced and "context line" not in replaced
    assert replaced.startswith("# Results\n\nWritten by hand.\n\n")
    assert replaced.endswith("\n## After\nAlso by hand.\n")
    assert replace_block(replaced, new_block) == replaced  # rerunning changes nothing


def test_an_empty_file_gets_just_the_block(tmp_path):
    path = tmp_path / "docs" / "results.md"
    block = render_block(ROWS, "context")
    write_block(path, block)
    assert path.read_text() == block


@pytest.mark.parametrize("text", [f"{END}\n{BEGIN}\n", f"{BEGIN}\nno end\n",
                                  f"{BEGIN}\n{END}\n{BEGIN}\n{END}\n"])
def test_broken_markers_are_an_error_not_a_guess(text):
    with pytest.raises(ValueError, match="markers"):
        replace_block(text, render_block(ROWS, "context"))


def test_suite_bench_reads_make_test_output():
    from orchestration.bench.suite import parse_output

    text = (
        "============================= slowest 15 durations ==============\n"
        "169.10s call     tests/e2e/test_rehearse_real_path.py::test_every_stage\n"
        "27.13s setup    tests/ray/test_reward_service_abuse.py::test_abusive[x y]\n"
        "========= 611 passed, 21 warnings in 612.50s (0:10:12) =========\n"
        "test suite wall time: 618 s\n"
    )
    figures = parse_output(text)
    assert figures["wall_s"] == 618 and figures["passed"] == 611 and figures["failed"] == 0
    assert figures["pytest_s"] == 612.5
    assert figures["slowest"][0] == (169.1, "call",
                                     "tests/e2e/test_rehearse_real_path.py::test_every_stage")
    assert figures["slowest"][1][2].endswith("test_abusive[x y]")  # ids may hold spaces
    assert len(figures["slowest"]) == 2
    failed = parse_output("== 1 failed, 3 passed in 9.0s ==\ntest suite wall time: 10 s\n")
    assert failed["failed"] == 1 and failed["passed"] == 3
    with pytest.raises(ValueError, match="no pytest summary"):
        parse_output("make: *** [Makefile:40: lint] Error 1\n")
