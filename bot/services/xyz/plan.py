"""A grid's cells: the base settings with each axis's value applied, as the script's `cell` does, and the order the
script renders them in.

Cell `ix + iy*len(x) + iz*len(x)*len(y)` sits in column ix, row iy of the grid for Z value iz. Every cell starts
from the same settings, with one fixed seed (a random base seed is drawn once for the whole grid, as the script's
`fix_seed` does, so the cells differ only by their axes); the X value is applied first, then Y, then Z.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.errors import UserError
from bot.services.xyz.axes import NO_AXIS, NOTHING, SEED, SEED_RANGE, Axis, Settings, axis_type
from engine.config import Limits
from engine.errors import EngineError
from engine.request import GenerationRequest

SCRIPT = "X/Y/Z plot"  # the script's title, its infotext's `Script`


@dataclass(frozen=True)
class GridAxes:
    """A grid's three axes (unused ones are `NO_AXIS`), with their values fixed: what its image and infotext need,
    and what is kept with a grid so it can be finished after a restart (`to_data` / `from_data`)."""

    x: Axis
    y: Axis = NO_AXIS
    z: Axis = NO_AXIS

    def __iter__(self) -> Iterator[Axis]:
        return iter((self.x, self.y, self.z))

    @property
    def cell_count(self) -> int:
        return len(self.x) * len(self.y) * len(self.z)

    def index(self, ix: int, iy: int, iz: int) -> int:
        return ix + iy * len(self.x) + iz * len(self.x) * len(self.y)

    def place(self, index: int) -> tuple[int, int, int]:
        """(ix, iy, iz) of a cell index."""
        per_z = len(self.x) * len(self.y)
        return index % len(self.x), index % per_z // len(self.x), index // per_z

    def cell_labels(self, index: int) -> list[str]:
        """The labels the cell sits under (`Steps: 20`, `Euler`), X first, without the empty ones."""
        labels = (axis.label(axis.values[i]) for axis, i in zip(self, self.place(index)))
        return [label for label in labels if label]

    def render_order(self) -> list[int]:
        """Cell indexes in the script's order: the costliest axis outermost (a checkpoint, then a VAE, changes as
        rarely as possible); with equal costs Z outermost, then Y, then X."""
        first, second = _outer_axes(self.x.type.cost, self.y.type.cost, self.z.type.cost)
        third = 3 - first - second
        sizes = [len(a) for a in self]
        order = []
        for a in range(sizes[first]):
            for b in range(sizes[second]):
                for c in range(sizes[third]):
                    place = [0, 0, 0]
                    place[first], place[second], place[third] = a, b, c
                    order.append(self.index(*place))
        return order

    def grid_params(self, *, with_z: bool) -> dict[str, str]:
        """The grid's infotext keys beside its first cell's (the script's): `Script`, `X Type`, `X Values`,
        `Fixed X Values` for a Seed axis, the same for Y, and for Z on the grid that shows every Z."""
        params = {"Script": SCRIPT}
        for name, axis in zip("XYZ", self):
            if axis.type is NOTHING or (name == "Z" and not with_z):
                continue
            params[f"{name} Type"] = axis.type.label
            params[f"{name} Values"] = axis.text
            if axis.type is SEED:
                params[f"Fixed {name} Values"] = ", ".join(str(v) for v in axis.values)
        return params

    def to_data(self) -> dict[str, Any]:
        """Plain JSON data, read back by `from_data`."""
        return {
            name: {"type": axis.type.label, "text": axis.text, "values": list(axis.values), "lora": axis.lora}
            for name, axis in zip("xyz", self)
            if axis.type is not NOTHING
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> GridAxes:
        def axis(name: str) -> Axis:
            if name not in data:
                return NO_AXIS
            item = data[name]
            return Axis(axis_type(item["type"]), item["text"], tuple(item["values"]), item.get("lora", ""))

        return cls(axis("x"), axis("y"), axis("z"))


@dataclass(frozen=True)
class Cell:
    """One cell: its place and its request fields (prompt, negative_prompt, steps, …)."""

    ix: int
    iy: int
    iz: int
    settings: dict[str, Any]


@dataclass(frozen=True)
class GridPlan:
    """The axes, as bound to the base settings, and every cell in index order."""

    axes: GridAxes
    cells: tuple[Cell, ...]

    def requests(self, limits: Limits) -> list[GenerationRequest]:
        """Every cell's request, checked before anything renders; a refused value names its cell."""
        out = []
        for index, cell in enumerate(self.cells):
            try:
                out.append(GenerationRequest(**cell.settings, limits=limits))
            except EngineError as exc:
                raise UserError(f"the cell {', '.join(self.axes.cell_labels(index))}: {exc}") from None
        return out


def check_cell_cap(axes: Sequence[Axis], cap: int) -> int:
    """The grid's cell count, or a user error when it is over `cap` (checked before anything is planned)."""
    sizes = [len(axis) for axis in axes]
    cells = math.prod(sizes)
    if cells > cap:
        shape = " x ".join(str(n) for n in sizes if n > 1) or "1"
        raise UserError(f"this grid has {cells} cells ({shape}); the most this bot renders in one grid is {cap}")
    return cells


def _outer_axes(x: float, y: float, z: float) -> tuple[int, int]:
    """The script's choice of the first and second axis processed (0 = X, 1 = Y, 2 = Z)."""
    if x > y and x > z:
        return 0, (1 if y > z else 2)
    if y > x and y > z:
        return 1, (0 if x > z else 2)
    if z > x and z > y:
        return 2, (0 if x > y else 1)
    return 2, 1


def plan_grid(
    base: Settings, x: Axis, y: Axis = NO_AXIS, z: Axis = NO_AXIS, rand: random.Random | None = None
) -> GridPlan:
    """Every cell's settings; a seed of -1 (the base's or an axis value) is drawn from `rand` first. A value that
    cannot apply (Prompt S/R not finding its text) is a user error before anything runs."""
    rand = rand or random.Random()
    fixed = dict(base)
    if fixed.get("seed", -1) == -1:
        fixed["seed"] = rand.randrange(SEED_RANGE)
    x, y, z = (axis.bound(fixed).with_fixed_seeds(rand) for axis in (x, y, z))
    cells = []
    for iz, vz in enumerate(z.values):
        for iy, vy in enumerate(y.values):
            for ix, vx in enumerate(x.values):
                settings = dict(fixed)
                x.apply(settings, vx)
                y.apply(settings, vy)
                z.apply(settings, vz)
                cells.append(Cell(ix, iy, iz, settings))
    return GridPlan(GridAxes(x, y, z), tuple(cells))
