"""The benchmark table: one row per performance goal (figure, ratio, goal, pass/fail, the
command that measured it), written between markers so the rest of docs/results.md is left as
it is. Pure text functions: no clocks, no models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"


@dataclass(frozen=True)
class Row:
    """One measured goal. `ratio` is the figure the goal is about, already formatted."""

    benchmark: str
    figure: str  # what was measured, with the absolute numbers as context
    ratio: str
    goal: str
    passed: bool
    command: str


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(rows: list[Row]) -> str:
    """A markdown table of `rows`, in order."""
    lines = [
        "| benchmark | figure | ratio | goal | pass/fail | command |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        verdict = "pass" if row.passed else "**fail**"
        cells = [row.benchmark, row.figure, row.ratio, row.goal, verdict, f"`{row.command}`"]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def render_block(rows: list[Row], context: str, details: list[str] = ()) -> str:
    """The marked block: what machine and command, the table, then each benchmark's details."""
    parts = [BEGIN, context.strip(), "", render_table(rows)]
    for detail in details:
        parts += ["", detail.strip()]
    parts.append(END)
    return "\n".join(parts) + "\n"


def replace_block(text: str, block: str) -> str:
    """`text` with its marked block replaced by `block` (appended when it has none)."""
    begin, end = text.find(BEGIN), text.find(END)
    if begin == -1 and end == -1:
        return (text.rstrip("\n") + "\n\n" if text.strip() else "") + block
    if begin == -1 or end == -1 or end < begin or text.count(BEGIN) > 1 or text.count(END) > 1:
        raise ValueError(
            f"the benchmark markers {BEGIN} ... {END} must appear once each, in that order; "
            "fix the file by hand (keep one pair) and rerun"
        )
    # The block ends with END: what follows the old END stays as it was.
    return text[:begin] + block.rstrip("\n") + text[end + len(END):]


def write_block(path: Path, block: str) -> None:
    """Replace (or add) the marked block of the markdown file at `path`."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_block(text, block), encoding="utf-8")
