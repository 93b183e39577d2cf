"""A grid's PNGs: the cells laid out with their labels, and the first cell's infotext plus the script's keys."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.services.xyz.axes import parse_axis
from bot.services.xyz.compose import compose
from bot.services.xyz.plan import plan_grid
from engine.infotext import infotext_for_request, parse_infotext, png_bytes, read_png_infotext
from engine.render.grid import xyz_grid
from engine.request import GenerationRequest

BASE = GenerationRequest(prompt="a cat, sitting", negative_prompt="blurry", seed=7, width=64, height=64).options()


def cell_png(settings: dict, colour: tuple[int, int, int]) -> bytes:
    request = GenerationRequest(**settings)
    text = infotext_for_request(
        request, seed=request.seed, model_name="tiny", model_hash="abc", vae_name=None, vae_hash=None, version="v1"
    )
    return png_bytes(Image.new("RGB", (64, 64), colour), text)


def pngs(plan) -> list[bytes]:
    return [cell_png(c.settings, (40 * i % 256, 90, 160)) for i, c in enumerate(plan.cells)]


def test_the_grid_is_the_layout_of_its_cells():
    plan = plan_grid(BASE, parse_axis("Steps: 1, 2, 3"), parse_axis("CFG Scale: 5, 7"))
    cells = pngs(plan)
    out = compose(plan.axes, cells)
    expected = xyz_grid(
        [Image.open(io.BytesIO(c)).convert("RGB") for c in cells], plan.axes.x.labels(), plan.axes.y.labels()
    ).image
    assert Image.open(io.BytesIO(out.grid)).tobytes() == expected.tobytes()
    assert out.sub_grids == []


def test_the_grid_infotext_is_the_first_cells_with_the_script_keys():
    plan = plan_grid(BASE, parse_axis("Steps: 1, 2"), parse_axis("Seed: 3, -1"), parse_axis("Sampler: Euler, Euler a"))
    out = compose(plan.axes, pngs(plan))
    info = parse_infotext(read_png_infotext(out.grid) or "")
    assert (info.prompt, info.negative_prompt) == ("a cat, sitting", "blurry")
    assert info.params["Steps"] == "1" and info.params["Seed"] == "3" and info.params["Sampler"] == "Euler"
    assert {
        k: info.params[k] for k in ("Script", "X Type", "X Values", "Y Type", "Y Values", "Z Type", "Z Values")
    } == {
        "Script": "X/Y/Z plot",
        "X Type": "Steps",
        "X Values": "1, 2",
        "Y Type": "Seed",
        "Y Values": "3, -1",
        "Z Type": "Sampler",
        "Z Values": "Euler, Euler a",
    }
    assert info.params["Fixed Y Values"] == ", ".join(str(v) for v in plan.axes.y.values)
    assert list(info.params)[-1] == "Version"
    assert len(out.sub_grids) == 2
    second = parse_infotext(read_png_infotext(out.sub_grids[1]) or "")
    assert second.params["Sampler"] == "Euler a" and "Z Type" not in second.params


def test_a_failed_cell_is_black_and_the_next_cell_gives_the_infotext():
    plan = plan_grid(BASE, parse_axis("Steps: 1, 2"))
    cells = pngs(plan)
    out = compose(plan.axes, [None, cells[1]])
    grid = Image.open(io.BytesIO(out.grid))
    assert grid.getpixel((10, grid.height - 10)) == (0, 0, 0)
    assert parse_infotext(read_png_infotext(out.grid) or "").params["Steps"] == "2"


def test_the_cell_count_must_match():
    plan = plan_grid(BASE, parse_axis("Steps: 1, 2"))
    with pytest.raises(ValueError, match="1 cell images for a grid of 2 cells"):
        compose(plan.axes, pngs(plan)[:1])
