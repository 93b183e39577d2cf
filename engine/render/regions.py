"""Vary (Region) without a drawing tool: a region written as cells of a 3×3 grid or a box in percent (pure).

Cells are a column letter and a row number, like a spreadsheet's: `a1` is the top-left ninth, `c3` the bottom-right
one; several cells (`a1 b1`, `b2, c2`) make one region. A box is four percentages `x0,y0,x1,y1` from the top-left
corner (`25,25,75,75` is the middle quarter; a `%` after each number is allowed). The region becomes a binary mask
of the image's size: white (change) inside, black elsewhere.
"""

from __future__ import annotations

import re

from PIL import Image, ImageDraw

from engine.errors import EngineError

Fractions = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the width and height

GRID = 3
_CELL = r"[a-c][1-3]"
_CELLS = re.compile(rf"\s*{_CELL}(?:[\s,]+{_CELL})*\s*", re.IGNORECASE)
_NUMBER = r"\s*(\d+(?:\.\d+)?)\s*%?\s*"
_BOX = re.compile(rf"{_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER}")
HELP = (
    "a region is cells of a 3x3 grid such as `a1 b2` (columns a-c from the left, rows 1-3 from the top) "
    "or a box in percent `x0,y0,x1,y1` such as `25,25,75,75`"
)


def parse_region(text: str) -> tuple[Fractions, ...]:
    """The boxes a region names, as fractions of the image; EngineError saying both forms for anything else."""
    if not isinstance(text, str):
        raise EngineError(f"{HELP} (got {text!r})")
    if _CELLS.fullmatch(text):
        cells = dict.fromkeys(re.findall(_CELL, text.lower()))  # in order, each once
        return tuple(_cell_box(cell) for cell in cells)
    found = _BOX.fullmatch(text)
    if found is None:
        raise EngineError(f"{HELP} (got {text!r})")
    x0, y0, x1, y1 = (float(n) for n in found.groups())
    if not (0 <= x0 < x1 <= 100 and 0 <= y0 < y1 <= 100):
        raise EngineError(
            f"a box in percent needs 0 <= x0 < x1 <= 100 and 0 <= y0 < y1 <= 100 (got {x0:g},{y0:g},{x1:g},{y1:g})"
        )
    return ((x0 / 100, y0 / 100, x1 / 100, y1 / 100),)


def _cell_box(cell: str) -> Fractions:
    column, row = ord(cell[0]) - ord("a"), int(cell[1]) - 1
    return column / GRID, row / GRID, (column + 1) / GRID, (row + 1) / GRID


def pixel_box(box: Fractions, width: int, height: int) -> tuple[int, int, int, int]:
    """A fractional box in pixels of a `width`×`height` image (x1, y1 exclusive), never empty."""
    x0, y0, x1, y1 = (round(f * side) for f, side in zip(box, (width, height, width, height)))
    x0, y0 = min(x0, width - 1), min(y0, height - 1)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def region_mask(boxes: tuple[Fractions, ...], width: int, height: int) -> Image.Image:
    """The binary mask (`L`, 255 = change) of the union of `boxes` on a `width`×`height` image."""
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    for box in boxes:
        x0, y0, x1, y1 = pixel_box(box, width, height)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=255)
    return mask
