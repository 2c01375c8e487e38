"""PNG sample grids of an evaluation: one column per table row (a model at a number of steps),
one row per prompt, with a header naming each column and a label per row.

The samples are upscaled by an integer factor (nearest neighbour) and pasted unchanged; the
labels are drawn in PIL's built-in default font, so nothing is fetched. A label too long for
its space is cut with "..."; table.md lists the prompts in full.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GRID_GAP = 2  # white pixels between grid tiles
PAD = 4  # white pixels around the labels
ROW_LABEL_WIDTH = 160  # the left band holding each row's number and prompt
HEADER_LINES = 3  # a column's model name (at most two lines), then its number of steps
INK = (20, 20, 20)
ELLIPSIS = "..."


@cache
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def line_height() -> int:
    return int(_font().getbbox("Ag|")[3]) + 2


def header_height() -> int:
    return HEADER_LINES * line_height() + 2 * PAD


def tile_origin(row: int, col: int, tile_h: int, tile_w: int) -> tuple[int, int]:
    """(y, x) of the top-left pixel of tile (row, col) in a labelled grid."""
    return header_height() + row * (tile_h + GRID_GAP), ROW_LABEL_WIDTH + col * (tile_w + GRID_GAP)


def grid_shape(rows: int, cols: int, tile_h: int, tile_w: int) -> tuple[int, int]:
    """(height, width) of a labelled grid of rows x cols tiles."""
    y, x = tile_origin(rows - 1, cols - 1, tile_h, tile_w)
    return y + tile_h, x + tile_w


def _fits(text: str, width: int) -> bool:
    return _font().getlength(text) <= width


def _split_word(word: str, width: int) -> list[str]:
    """A word wider than `width` cut into pieces that fit (at least one character each)."""
    pieces = []
    while len(word) > 1 and not _fits(word, width):
        cut = 1
        while cut < len(word) - 1 and _fits(word[: cut + 1], width):
            cut += 1
        pieces.append(word[:cut])
        word = word[cut:]
    return [*pieces, word]


def fit_lines(text: str, width: int, max_lines: int) -> list[str]:
    """`text` wrapped at spaces into at most `max_lines` lines of at most `width` pixels; the
    last line ends in "..." when the text does not fit."""
    lines: list[str] = []
    for word in text.split():
        joined = f"{lines[-1]} {word}" if lines else word
        if lines and _fits(joined, width):
            lines[-1] = joined
        else:
            lines += _split_word(word, width)
    if len(lines) <= max_lines:
        return lines
    last = lines[max_lines - 1]
    while last and not _fits(last + ELLIPSIS, width):
        last = last[:-1]
    return [*lines[: max_lines - 1], last + ELLIPSIS]


def _draw_lines(draw: ImageDraw.ImageDraw, x: int, y: int, lines: list[str]) -> None:
    for k, line in enumerate(lines):
        draw.text((x, y + k * line_height()), line, fill=INK, font=_font())


def image_grid(columns: list[np.ndarray], scale: int = 1) -> np.ndarray:
    """Tile (R, H, W, 3) uint8 stacks side by side: column c = columns[c], row r = item r.

    Returns (R*H*s + (R-1)*gap, C*W*s + (C-1)*gap, 3) uint8 on a white background.
    """
    if not columns:
        raise ValueError("image_grid needs at least one column")
    rows, h, w, _ = columns[0].shape
    if any(c.shape != columns[0].shape for c in columns):
        raise ValueError("all grid columns must hold images of the same count and size")
    th, tw = h * scale, w * scale
    out = np.full((rows * th + (rows - 1) * GRID_GAP, len(columns) * tw + (len(columns) - 1)
                   * GRID_GAP, 3), 255, dtype=np.uint8)
    for c, stack in enumerate(columns):
        tiles = stack.repeat(scale, axis=1).repeat(scale, axis=2)
        for r in range(rows):
            y, x = r * (th + GRID_GAP), c * (tw + GRID_GAP)
            out[y : y + th, x : x + tw] = tiles[r]
    return out


def labelled_grid(
    columns: list[np.ndarray],
    column_labels: Sequence[tuple[str, str]],
    row_labels: Sequence[str],
    scale: int = 1,
) -> np.ndarray:
    """`image_grid` under a header naming each column and beside each row's label.

    `column_labels[c]` is (model name, detail such as "4 steps"); `row_labels[r]` is the
    prompt of row r, drawn after its number ("1. a red circle ...").
    """
    tiles = image_grid(columns, scale)
    rows, h, w, _ = columns[0].shape
    if len(column_labels) != len(columns) or len(row_labels) != rows:
        raise ValueError(
            f"got {len(column_labels)} column and {len(row_labels)} row labels for a "
            f"{rows}x{len(columns)} grid; give one label per column and per row")
    th, tw = h * scale, w * scale
    top, left = tile_origin(0, 0, th, tw)
    height, width = grid_shape(rows, len(columns), th, tw)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(Image.fromarray(tiles), (left, top))
    draw = ImageDraw.Draw(canvas)
    for c, (name, detail) in enumerate(column_labels):
        lines = fit_lines(name, tw, HEADER_LINES - 1) + fit_lines(detail, tw, 1)
        _draw_lines(draw, tile_origin(0, c, th, tw)[1], PAD, lines)
    row_lines = max(1, th // line_height())
    for r, prompt in enumerate(row_labels):
        lines = fit_lines(f"{r + 1}. {prompt}", left - 2 * PAD, row_lines)
        _draw_lines(draw, PAD, tile_origin(r, 0, th, tw)[0], lines)
    return np.asarray(canvas)


def write_grid(
    columns: list[np.ndarray],
    path: Path,
    scale: int,
    column_labels: Sequence[tuple[str, str]],
    row_labels: Sequence[str],
) -> None:
    Image.fromarray(labelled_grid(columns, column_labels, row_labels, scale)).save(path)
