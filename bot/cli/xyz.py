"""`sdbot xyz`: A1111's X/Y/Z plot without Discord: every cell rendered and saved, then the grid.

`sdbot xyz PROMPT --x "Steps: 10,20,30" [--y "CFG Scale: 5-9 (+2)"] [--z "Sampler: Euler, DPM++ 2M Karras"]
[the render options] --out grid.png` writes each cell beside the grid as `grid-X-Y.png` (`grid-X-Y-Z.png` with a
Z axis; 1-based), the grid as `grid.png` and, with a Z axis, each Z value's sub-grid as `grid-zN.png`. Every cell
is checked before anything renders; cells that can share a diffusers call do (in the script's order: the
costliest axis outermost), and each is the same image as its settings rendered alone.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bot.cli.render import add_request_options, png_target, request_from_args
from bot.config import load_config
from bot.services.xyz.axes import NO_AXIS, parse_axis
from bot.services.xyz.compose import compose
from bot.services.xyz.plan import GridAxes, check_cell_cap, plan_grid

if TYPE_CHECKING:
    from engine.render.pipeline import Engine, RenderedImage
    from engine.request import GenerationRequest


def add_parsers(sub) -> None:
    p = sub.add_parser("xyz", help="an A1111 X/Y/Z plot: a grid of renders across settings, without Discord")
    p.add_argument("prompt")
    p.add_argument("--x", required=True, metavar='"TYPE: VALUES"', help='e.g. "Steps: 10,20,30" or "Seed: 1-4"')
    p.add_argument("--y", metavar='"TYPE: VALUES"', help='e.g. "CFG Scale: 5-9 (+2)"')
    p.add_argument("--z", metavar='"TYPE: VALUES"', help='e.g. "Sampler: Euler, DPM++ 2M Karras" (one grid each)')
    add_request_options(p, batch=False)
    p.add_argument("--out", default="out/xyz.png", metavar="FILE.png", help="the grid; the cells are saved beside it")
    p.add_argument("--config", metavar="F")
    p.set_defaults(func=cmd_xyz)


def cmd_xyz(args: argparse.Namespace) -> int:
    from engine.render.pipeline import Engine
    from engine.tiny.models import ensure_demo_model

    config = load_config(args.config)
    engine_config = config.engine_config()
    target = png_target(args.out)
    x, y, z = (parse_axis(text) if text else NO_AXIS for text in (args.x, args.y, args.z))
    check_cell_cap((x, y, z), config.settings.moderation.max_grid_cells)
    ensure_demo_model(engine_config)
    base = request_from_args(args, engine_config)
    plan = plan_grid(base.options(), x, y, z)
    requests = plan.requests(engine_config.limits)
    axes = plan.axes
    images = render_cells(Engine(engine_config), requests, axes.render_order(), engine_config.limits.max_batch)
    target.parent.mkdir(parents=True, exist_ok=True)
    pngs = []
    for index, image in enumerate(images):
        path = target.with_name(f"{target.stem}-{cell_name(axes, index)}.png")
        path.write_bytes(image.png())
        pngs.append(image.png())
        print(f"{path}  seed {image.seed}  {', '.join(axes.cell_labels(index))}")
    grid = compose(axes, pngs)
    target.write_bytes(grid.grid)
    for iz, sub in enumerate(grid.sub_grids, start=1):
        target.with_name(f"{target.stem}-z{iz}.png").write_bytes(sub)
    print(f"{target}  {len(axes.x)}x{len(axes.y)} grid" + (f", {len(axes.z)} of them" if len(axes.z) > 1 else ""))
    return 0


def cell_name(axes: GridAxes, index: int) -> str:
    """`X-Y` (`X-Y-Z` with a Z axis), 1-based: the cell's file name suffix."""
    ix, iy, iz = axes.place(index)
    return f"{ix + 1}-{iy + 1}" + (f"-{iz + 1}" if len(axes.z) > 1 else "")


def render_cells(
    engine: Engine, requests: Sequence[GenerationRequest], order: Sequence[int], max_batch: int
) -> list[RenderedImage]:
    """Every cell's image, in cell order. Cells are taken in `order`; cells with equal settings (the worker's
    batch key) share a call, at most `max_batch` at a time, as the worker would batch them."""
    images: dict[int, RenderedImage] = {}
    pending = list(order)
    while pending:
        key = requests[pending[0]].batch_key()
        group = [i for i in pending if requests[i].batch_key() == key][:max_batch]
        for i, result in zip(group, engine.render_batch([requests[i] for i in group])):
            images[i] = result.images[0]
        pending = [i for i in pending if i not in group]
    return [images[i] for i in range(len(requests))]
