"""The X/Y/Z plot's grid image, laid out as A1111 lays it out (modules/images.py `image_grid`,
`draw_grid_annotations`; scripts/xyz_grid.py `draw_xyz_grid`).

Cells sit in rows (Y) and columns (X), each slot as large as the largest cell, a smaller cell centred in its slot.
Labels go above the columns and left of the rows: the font size is (cell width + cell height) // 25, lines are
word-wrapped to the column's width (the left column is 3/4 of a cell wide, and only there when some row has a
label), and a line still too wide is drawn in a smaller font until it fits. With a Z axis each Z value gets such a
sub-grid, and the main grid puts the sub-grids side by side in one row with the Z labels above them. The colours
are A1111's defaults (black text, grey for inactive lines, white background). The face is Pillow's built-in
scalable font, not A1111's Roboto: the layout rules are the same, the letters differ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
TEXT = (0, 0, 0)
INACTIVE = (153, 153, 153)
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class Annotation:
    """One label line (A1111's GridAnnotation); an inactive one is grey and struck through (prompt matrix)."""

    text: str = ""
    active: bool = True


@dataclass(frozen=True)
class _Line:
    text: str
    active: bool
    width: int
    height: int
    allowed: int


@dataclass(frozen=True)
class XYZGrid:
    """The main grid (every Z side by side) and one sub-grid per Z value."""

    image: Image.Image
    sub_grids: list[Image.Image]


def font(size: int) -> Font:
    return ImageFont.load_default(size=max(1, size))


def image_grid(images: Sequence[Image.Image], rows: int) -> Image.Image:
    """`images` in `rows` rows, left to right then top to bottom; every slot the size of the largest image."""
    rows = min(rows, len(images))
    cols = math.ceil(len(images) / rows)
    w = max(img.width for img in images)
    h = max(img.height for img in images)
    grid = Image.new("RGB", (cols * w, rows * h), BACKGROUND)
    for i, img in enumerate(images):
        dx = 0 if img.width == w else (w - img.width) // 2
        dy = 0 if img.height == h else (h - img.height) // 2
        grid.paste(img, (i % cols * w + dx, i // cols * h + dy))
    return grid


def draw_annotations(
    grid: Image.Image,
    width: int,
    height: int,
    top: Sequence[Sequence[Annotation]],
    left: Sequence[Sequence[Annotation]],
    margin: int = 0,
) -> Image.Image:
    """`grid` (cells of `width` x `height`) with `top[c]` above column c and `left[r]` left of row r, the cells
    `margin` pixels apart."""
    fontsize = (width + height) // 25
    spacing = fontsize // 2
    fnt = font(fontsize)
    pad_left = 0 if not any(a.text for lines in left for a in lines) else width * 3 // 4
    cols, rows = grid.width // width, grid.height // height
    if (cols, rows) != (len(top), len(left)):
        raise ValueError(f"{len(top)} top and {len(left)} left labels for a grid of {cols} x {rows} cells")

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1), BACKGROUND))
    top_lines = [_lines(measure, fnt, labels, width) for labels in top]
    left_lines = [_lines(measure, fnt, labels, pad_left) for labels in left]
    top_heights = [sum(line.height + spacing for line in lines) - spacing for lines in top_lines]
    # A1111 subtracts the spacing once per line here (not once in all): the left labels sit a little lower.
    left_heights = [sum(line.height + spacing for line in lines) - spacing * len(lines) for lines in left_lines]
    pad_top = 0 if sum(top_heights) == 0 else max(top_heights) + spacing * 2

    size = (grid.width + pad_left + margin * (cols - 1), grid.height + pad_top + margin * (rows - 1))
    result = Image.new("RGB", size, BACKGROUND)
    for row in range(rows):
        for col in range(cols):
            cell = grid.crop((width * col, height * row, width * (col + 1), height * (row + 1)))
            result.paste(cell, (pad_left + (width + margin) * col, pad_top + (height + margin) * row))

    draw = ImageDraw.Draw(result)
    for col, lines in enumerate(top_lines):
        x = pad_left + (width + margin) * col + width / 2
        _draw_lines(draw, x, pad_top / 2 - top_heights[col] / 2, lines, fontsize, spacing)
    for row, lines in enumerate(left_lines):
        y = pad_top + (height + margin) * row + height / 2 - left_heights[row] / 2
        _draw_lines(draw, pad_left / 2, y, lines, fontsize, spacing)
    return result


def _lines(measure: ImageDraw.ImageDraw, fnt: Font, labels: Sequence[Annotation], allowed: int) -> list[_Line]:
    """Each label word-wrapped to `allowed` pixels, with every line's size (A1111's `wrap` and bbox sizes)."""
    out = []
    for label in labels:
        for text in _wrap(measure, label.text, fnt, allowed):
            x0, y0, x1, y1 = measure.multiline_textbbox((0, 0), text, font=fnt)
            out.append(_Line(text, label.active, int(x1 - x0), int(y1 - y0), allowed))
    return out


def _wrap(measure: ImageDraw.ImageDraw, text: str, fnt: Font, allowed: int) -> list[str]:
    """Words joined while the line fits; a word that does not fit alone still gets its own line."""
    lines = [""]
    for word in text.split():
        line = f"{lines[-1]} {word}".strip()
        if measure.textlength(line, font=fnt) <= allowed:
            lines[-1] = line
        else:
            lines.append(word)
    return lines


def _draw_lines(draw: ImageDraw.ImageDraw, x: float, y: float, lines: list[_Line], fontsize: int, spacing: int) -> None:
    for line in lines:
        fnt, size = font(fontsize), fontsize
        while size > 1:
            x0, _, x1, _ = draw.multiline_textbbox((0, 0), line.text, font=fnt)
            if x1 - x0 <= line.allowed:
                break
            size -= 1
            fnt = font(size)
        colour = TEXT if line.active else INACTIVE
        draw.multiline_text((x, y + line.height / 2), line.text, font=fnt, fill=colour, anchor="mm", align="center")
        if not line.active:
            middle = y + line.height // 2
            draw.line((x - line.width // 2, middle, x + line.width // 2, middle), fill=INACTIVE, width=4)
        y += line.height + spacing


def xyz_grid(
    cells: Sequence[Image.Image | None],
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    z_labels: Sequence[str] = ("",),
    *,
    margin: int = 0,
    legend: bool = True,
) -> XYZGrid:
    """The plot for cells indexed `ix + iy*len(x) + iz*len(x)*len(y)`; a missing cell (None: it failed) is black,
    the size of the first cell, as the script draws it."""
    nx, ny, nz = len(x_labels), len(y_labels), len(z_labels)
    if len(cells) != nx * ny * nz:
        raise ValueError(f"{len(cells)} cells for a {nx} x {ny} x {nz} grid")
    first = next((c for c in cells if c is not None), None)
    if first is None:
        raise ValueError("no cell has an image")
    filled = [c if c is not None else Image.new(first.mode, first.size) for c in cells]
    top = [[Annotation(label)] for label in x_labels]
    left = [[Annotation(label)] for label in y_labels]
    sub_grids = []
    for iz in range(nz):
        members = filled[iz * nx * ny : (iz + 1) * nx * ny]
        grid = image_grid(members, rows=ny)
        if legend:
            w, h = max(c.width for c in members), max(c.height for c in members)
            grid = draw_annotations(grid, w, h, top, left, margin)
        sub_grids.append(grid)
    main = image_grid(sub_grids, rows=1)
    if legend:
        w, h = max(g.width for g in sub_grids), max(g.height for g in sub_grids)
        main = draw_annotations(main, w, h, [[Annotation(label)] for label in z_labels], [[Annotation()]])
    return XYZGrid(main, sub_grids)
