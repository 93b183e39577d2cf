"""A finished grid's images: the cells' PNGs laid out by `engine.render.grid`, with the script's infotext.

The grid's infotext is its first cell's (the cell in column 1, row 1 of the Z value) with the script's keys added
(`Script: X/Y/Z plot`, `X Type`, `X Values`, …; `GridPlan.grid_params`), as A1111 writes it for its grids; the main
grid also names the Z axis, each Z value's sub-grid does not. A cell that has no image (it failed) is black.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from bot.services.xyz.plan import GridAxes
from engine.infotext import format_infotext, parse_infotext, png_bytes, read_png_infotext
from engine.render.grid import xyz_grid


@dataclass(frozen=True)
class GridImages:
    """The main grid PNG, and one PNG per Z value when the grid has a Z axis of several values."""

    grid: bytes
    sub_grids: list[bytes]


def compose(axes: GridAxes, cells: Sequence[bytes | None]) -> GridImages:
    """The grid PNGs for `cells` (PNG bytes in cell index order; None: that cell has no image)."""
    if len(cells) != axes.cell_count:
        raise ValueError(f"{len(cells)} cell images for a grid of {axes.cell_count} cells")
    images = [None if data is None else _image(data) for data in cells]
    plot = xyz_grid(images, axes.x.labels(), axes.y.labels(), axes.z.labels())
    per_z = len(axes.x) * len(axes.y)
    main = png_bytes(plot.image, _infotext(cells, axes.grid_params(with_z=True)))
    if len(axes.z) == 1:
        return GridImages(main, [])
    subs = [
        png_bytes(sub, _infotext(cells[iz * per_z : (iz + 1) * per_z], axes.grid_params(with_z=False)))
        for iz, sub in enumerate(plot.sub_grids)
    ]
    return GridImages(main, subs)


def _image(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def _infotext(cells: Sequence[bytes | None], grid_params: dict[str, str]) -> str:
    """The first cell's infotext (the first cell that has one) with the grid's keys added before `Version`."""
    text = next((t for t in (read_png_infotext(c) for c in cells if c is not None) if t), None)
    info = parse_infotext(text or "")
    params: dict[str, object] = {**info.params, **grid_params}
    return format_infotext(info.prompt, info.negative_prompt or "", params)
