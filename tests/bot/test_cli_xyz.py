"""`sdbot xyz` and dynamic prompts on the command line: the grid and its cells, each cell pixel-equal to its
single render, the labels, the cell cap and one-line refusals; `sdbot render` with {a|b} and wildcards;
`sdbot models` lists the wildcards."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.infotext import parse_infotext, read_png_infotext
from tests.bot.test_cli import run

COMMON = ("--size", "64x64", "--steps", "2", "--sampler", "Euler", "--seed", "5")


@pytest.fixture
def config(tmp_path: Path, models_dir: Path) -> Path:
    (models_dir / "wildcards" / "animals").mkdir(parents=True)
    (models_dir / "wildcards" / "animals" / "pets.txt").write_text("cat\ndog\n", encoding="utf-8")
    path = tmp_path / "config.toml"
    path.write_text(f'[engine]\nmodels_dir = "{models_dir}"\n\n[moderation]\nmax_grid_cells = 6\n')
    return path


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def info(path: Path):
    return parse_infotext(read_png_infotext(path.read_bytes()) or "")


def test_xyz_writes_the_grid_and_every_cell_equal_to_its_single_render(capsys, tmp_path, config):
    out = tmp_path / "out" / "grid.png"
    code, stdout, _ = run(
        capsys, "xyz", "a photo of a cat", "--x", "Steps: 1-3 (+1)", "--y", "CFG Scale: 5, 9", *COMMON,
        "--out", str(out), "--config", str(config),
    )  # fmt: skip
    assert code == 0
    cells = {(ix, iy): tmp_path / "out" / f"grid-{ix}-{iy}.png" for ix in (1, 2, 3) for iy in (1, 2)}
    assert all(p.exists() for p in cells.values())
    assert f"{cells[(2, 1)]}  seed 5  Steps: 2, CFG Scale: 5.0" in stdout
    assert stdout.strip().endswith(f"{out}  3x2 grid")
    # a cell is the single render with its settings
    single = tmp_path / "single.png"
    run(capsys, "render", "a photo of a cat", *COMMON, "--steps", "2", "--cfg", "9", "--out", str(single),
        "--config", str(config))  # fmt: skip
    assert np.array_equal(pixels(cells[(2, 2)]), pixels(single))
    assert read_png_infotext(cells[(2, 2)].read_bytes()) == read_png_infotext(single.read_bytes())
    # the grid: cells in their slots below the labels, and the script's infotext keys
    grid = Image.open(out).convert("RGB")
    assert grid.width == 64 * 3 + 64 * 3 // 4 and grid.height > 64 * 2
    top = grid.height - 128
    slot = np.asarray(grid)[top + 64 : top + 128, 48 + 64 : 48 + 128]
    assert np.array_equal(slot, pixels(cells[(2, 2)]))
    params = info(out).params
    assert (params["Script"], params["X Type"], params["X Values"]) == ("X/Y/Z plot", "Steps", "1-3 (+1)")
    assert (params["Y Type"], params["Y Values"], params["Steps"]) == ("CFG Scale", "5, 9", "1")


def test_xyz_z_axis_writes_sub_grids(capsys, tmp_path, config):
    out = tmp_path / "g.png"
    code, stdout, _ = run(
        capsys, "xyz", "a cat", "--x", "Seed: 1, 2", "--z", 'Sampler: Euler,"DPM++ 2M Karras"', *COMMON,
        "--out", str(out), "--config", str(config),
    )  # fmt: skip
    assert code == 0, stdout
    assert (tmp_path / "g-2-1-2.png").exists() and (tmp_path / "g-z1.png").exists() and (tmp_path / "g-z2.png").exists()
    assert info(tmp_path / "g-2-1-2.png").params["Sampler"] == "DPM++ 2M"
    assert info(out).params["Z Type"] == "Sampler" and "Z Type" not in info(tmp_path / "g-z1.png").params
    assert Image.open(out).width == 2 * Image.open(tmp_path / "g-z1.png").width


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--x", "Steps: 1-7"), "this grid has 7 cells (7); the most this bot renders in one grid is 6"),
        (("--x", "Colour: red"), "unknown axis type 'Colour'"),
        (("--x", "Steps: 1, x"), "Steps: 'x' is not a whole number"),
        (("--x", "Prompt S/R: dog, fox"), "Prompt S/R did not find dog in prompt or negative prompt."),
        (("--x", "Steps: 1, 5000"), "the cell Steps: 5000: steps must be from 1 to"),
        (("--x", "Sampler: Euler, Eular"), "unknown sampler 'Eular'"),
    ],
)
def test_xyz_refusals_are_one_line_before_anything_runs(capsys, tmp_path, config, args, message):
    out = tmp_path / "bad.png"
    code, _, stderr = run(capsys, "xyz", "a cat", *args, *COMMON, "--out", str(out), "--config", str(config))
    assert code == 2
    assert stderr.startswith("sdbot: error: ") and message in stderr and stderr.count("\n") == 1
    assert not list(tmp_path.glob("bad*.png"))


def test_render_draws_each_images_prompt_from_its_seed(capsys, tmp_path, config):
    out = tmp_path / "dyn.png"
    code, _, _ = run(
        capsys, "render", "a {red|blue} __animals/pets__", *COMMON, "--batch", "3", "--out", str(out),
        "--config", str(config),
    )  # fmt: skip
    assert code == 0
    prompts = [info(tmp_path / f"dyn-{i}.png").prompt for i in (1, 2, 3)]
    assert all(p.split()[1] in ("red", "blue") and p.split()[2] in ("cat", "dog") for p in prompts)
    assert info(tmp_path / "dyn-1.png").params["Template"] == "a {red|blue} __animals/pets__"
    again = tmp_path / "again.png"
    run(capsys, "render", "a {red|blue} __animals/pets__", *COMMON, "--seed", "7", "--out", str(again),
        "--config", str(config))  # fmt: skip
    assert info(again).prompt == prompts[2]  # seed 7 = image 3 of the batch from seed 5


def test_render_combinatorial(capsys, tmp_path, config):
    out = tmp_path / "comb.png"
    code, _, _ = run(
        capsys, "render", "a {red|blue} __animals/pets__", *COMMON, "--batch", "4", "--combinatorial",
        "--out", str(out), "--config", str(config),
    )  # fmt: skip
    assert code == 0
    assert [info(tmp_path / f"comb-{i}.png").prompt for i in (1, 2, 3, 4)] == [
        "a red cat",
        "a red dog",
        "a blue cat",
        "a blue dog",
    ]


def test_a_missing_wildcard_is_one_line(capsys, tmp_path, config):
    code, _, stderr = run(
        capsys, "render", "a __fish__", *COMMON, "--out", str(tmp_path / "x.png"), "--config", str(config)
    )
    assert code == 2 and "no wildcard named __fish__" in stderr


def test_models_lists_the_wildcards(capsys, config):
    code, stdout, _ = run(capsys, "models", "--config", str(config))
    assert code == 0
    assert "wildcards (wildcards/NAME.txt; use __NAME__ in a prompt): animals/pets" in stdout


def test_a_grid_png_reads_back(capsys, tmp_path, config):
    out = tmp_path / "r.png"
    run(capsys, "xyz", "a cat", "--x", "Steps: 1, 2", *COMMON, "--out", str(out), "--config", str(config))
    assert Image.open(io.BytesIO(out.read_bytes())).size[0] == 128
