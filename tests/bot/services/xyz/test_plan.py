"""A grid's cells: index order, one fixed seed, axes applied x then y then z, the script's render order and its
grid infotext keys."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.errors import UserError
from bot.services.xyz.axes import NO_AXIS, parse_axis
from bot.services.xyz.plan import GridAxes, plan_grid
from engine.request import GenerationRequest

BASE = GenerationRequest(prompt="a cat", seed=42).options()


def test_cells_in_index_order():
    plan = plan_grid(BASE, parse_axis("Steps: 1, 2, 3"), parse_axis("CFG Scale: 4, 5"))
    assert [(c.ix, c.iy, c.iz) for c in plan.cells] == [
        (0, 0, 0),
        (1, 0, 0),
        (2, 0, 0),
        (0, 1, 0),
        (1, 1, 0),
        (2, 1, 0),
    ]
    assert [(c.settings["steps"], c.settings["cfg_scale"]) for c in plan.cells] == [
        (1, 4.0),
        (2, 4.0),
        (3, 4.0),
        (1, 5.0),
        (2, 5.0),
        (3, 5.0),
    ]
    assert all(plan.axes.index(c.ix, c.iy, c.iz) == i for i, c in enumerate(plan.cells))


def test_one_random_seed_for_every_cell():
    plan = plan_grid(BASE | {"seed": -1}, parse_axis("Steps: 1, 2"), rand=random.Random(1))
    seeds = {c.settings["seed"] for c in plan.cells}
    assert seeds == {random.Random(1).randrange(4294967294)}


def test_a_seed_axis_wins_over_the_base_seed():
    plan = plan_grid(BASE, parse_axis("Seed: 1, -1"), rand=random.Random(1))
    assert [c.settings["seed"] for c in plan.cells] == [1, random.Random(1).randrange(4294967294)]
    assert plan.axes.grid_params(with_z=True)["Fixed X Values"] == f"1, {plan.cells[1].settings['seed']}"


def test_axes_apply_x_then_y_then_z():
    plan = plan_grid(
        BASE | {"prompt": "a cat"}, parse_axis("Prompt S/R: cat, cats"), parse_axis("Prompt S/R: cat, dog")
    )
    # X = cats, Y = dog: "a cat" -> "a cats" -> "a dogs" (Y first would have left X nothing to find)
    assert [c.settings["prompt"] for c in plan.cells] == ["a cat", "a cats", "a dog", "a dogs"]


def test_a_prompt_sr_that_finds_nothing_is_refused_before_anything_runs():
    with pytest.raises(UserError, match="Prompt S/R did not find dog"):
        plan_grid(BASE, parse_axis("Steps: 1"), parse_axis("Prompt S/R: dog, fox"))


@pytest.mark.parametrize(
    ("x", "y", "z", "order"),
    [
        # equal costs: Z outermost, then Y, then X (the script's default)
        ("Steps: 1, 2", "CFG Scale: 3, 4", "", [0, 1, 2, 3]),
        # a checkpoint axis goes outermost, then the next costliest
        ("Checkpoint name: a, b", "Steps: 1, 2", "", [0, 2, 1, 3]),
        ("Steps: 1, 2", "VAE: a, b", "Checkpoint name: c, d", [0, 1, 2, 3, 4, 5, 6, 7]),
        ("VAE: a, b", "Steps: 1, 2", "Checkpoint name: c, d", [0, 2, 1, 3, 4, 6, 5, 7]),
        ("Checkpoint name: a, b", "Steps: 1, 2", "VAE: c, d", [0, 2, 4, 6, 1, 3, 5, 7]),
    ],
)
def test_render_order_puts_the_costliest_axis_outermost(x, y, z, order):
    axes = [parse_axis(t) for t in (x, y, z) if t]
    assert plan_grid(BASE, *axes).axes.render_order() == order


def test_grid_params_as_the_script_writes_them():
    plan = plan_grid(
        BASE, parse_axis("Steps: 10-30 [3]"), parse_axis("Sampler: Euler, Euler a"), parse_axis("Seed: 1, 2")
    )
    assert plan.axes.grid_params(with_z=False) == {
        "Script": "X/Y/Z plot",
        "X Type": "Steps",
        "X Values": "10-30 [3]",
        "Y Type": "Sampler",
        "Y Values": "Euler, Euler a",
    }
    assert plan.axes.grid_params(with_z=True) == plan.axes.grid_params(with_z=False) | {
        "Z Type": "Seed",
        "Z Values": "1, 2",
        "Fixed Z Values": "1, 2",
    }


@given(
    nx=st.integers(1, 4),
    ny=st.integers(1, 4),
    nz=st.integers(1, 3),
    costly=st.sampled_from(["", "x", "y", "z"]),
)
def test_render_order_visits_every_cell_once(nx, ny, nz, costly):
    def axis(name: str, n: int) -> str:
        kind = "Checkpoint name" if costly == name else "Steps"
        return f"{kind}: " + ", ".join(str(i + 1) for i in range(n))

    plan = plan_grid(BASE, parse_axis(axis("x", nx)), parse_axis(axis("y", ny)), parse_axis(axis("z", nz)))
    order = plan.axes.render_order()
    assert sorted(order) == list(range(nx * ny * nz)) == list(range(len(plan.cells)))


def test_axes_round_trip_through_plain_data():
    plan = plan_grid(
        BASE | {"prompt": "a cat <lora:detail:1>"},
        parse_axis("Seed: -1, 3"),
        parse_axis("LoRA weight: 0-1 [3]"),
        parse_axis("Sampler: Euler, Euler a"),
    )
    data = json.loads(json.dumps(plan.axes.to_data()))
    assert GridAxes.from_data(data) == plan.axes
    assert GridAxes.from_data(plan_grid(BASE, parse_axis("Steps: 1")).axes.to_data()).y == NO_AXIS


def test_place_and_cell_labels():
    plan = plan_grid(BASE, parse_axis("Steps: 1, 2, 3"), parse_axis("CFG Scale: 4, 5"), parse_axis("Seed: 8, 9"))
    axes = plan.axes
    for index, cell in enumerate(plan.cells):
        assert axes.place(index) == (cell.ix, cell.iy, cell.iz)
    assert axes.cell_labels(axes.index(2, 1, 1)) == ["Steps: 3", "CFG Scale: 5.0", "Seed: 9"]
    assert plan_grid(BASE, parse_axis("Steps: 1, 2")).axes.cell_labels(1) == ["Steps: 2"]
