"""`sdbot render --control IMAGE --control-model NAME ...` and the ControlNet section of `sdbot models`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from bot.cli import main
from engine.infotext import parse_infotext, read_png_infotext


@pytest.fixture
def config(tmp_path: Path, models_dir: Path, tiny_controlnets: dict[str, Path]) -> Path:
    folder = models_dir / "ControlNet"
    folder.mkdir()
    shutil.copy(tiny_controlnets["sd15-file"], folder / "control_tiny_sd15_canny.safetensors")
    shutil.copytree(tiny_controlnets["sd15-folder"], folder / "sd15" / "tiny-depth")
    shutil.copy(tiny_controlnets["sdxl-file"], folder / "tiny_xl_canny.safetensors")
    path = tmp_path / "config.toml"
    path.write_text(f'[engine]\nmodels_dir = "{models_dir}"\n')
    return path


@pytest.fixture
def pose(tmp_path: Path) -> Path:
    path = tmp_path / "pose.png"
    image = Image.new("RGB", (96, 64), (10, 10, 10))
    image.paste((240, 220, 30), (20, 10, 70, 50))
    image.save(path)
    return path


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


BASE = ("render", "a photo of a cat", "--steps", "3", "--sampler", "Euler", "--seed", "1", "--size", "64x64")


def test_each_control_starts_a_unit(capsys, tmp_path: Path, config: Path, pose: Path) -> None:
    out = tmp_path / "cn.png"
    code, stdout, err = run(
        capsys,
        *BASE,
        "--control",
        str(pose),
        "--control-model",
        "control_tiny_sd15_canny",
        "--control-module",
        "canny",
        "--control-weight",
        "0.5",
        "--control-mode",
        "prompt",
        "--control",
        str(pose),
        "--control-model",
        "tiny-depth",
        "--control-end",
        "0.5",
        "--control-resize",
        "fill",
        "--control-pixel-perfect",
        "--out",
        str(out),
        "--config",
        str(config),
    )
    assert code == 0, err
    params = parse_infotext(read_png_infotext(out.read_bytes()) or "").params
    first, second = params["ControlNet 0"], params["ControlNet 1"]
    assert first.startswith("Module: canny, Model: control_tiny_sd15_canny [") and "Weight: 0.5," in first
    assert first.endswith("Control Mode: My prompt is more important")
    assert second.startswith("Module: none, Model: tiny-depth [") and "Guidance End: 0.5," in second
    assert "Resize Mode: Resize and Fill" in second and "Pixel Perfect: True" in second


def test_a_unit_flag_before_any_control_is_a_usage_error(capsys, config: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*BASE, "--control-model", "x", "--config", str(config)])
    assert exit_info.value.code == 2
    assert "--control-model sets a ControlNet unit: put it after the unit's --control IMAGE" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--control-model", "nope"), "sdbot: error: ControlNet model 'nope' not found; available: "),
        (("--control-model", "tiny_xl_canny"), "sdbot: error: ControlNet tiny_xl_canny is for SDXL; the checkpoint"),
        ((), "sdbot: error: no ControlNet in "),  # module none serves no control type: name the model
        (("--control-model", "tiny-depth", "--control-weight", "3"), "sdbot: error: ControlNet weight must be from 0"),
    ],
)
def test_unusable_units_are_one_line(capsys, tmp_path: Path, config: Path, pose: Path, flags, message) -> None:
    code, _, err = run(
        capsys, *BASE, "--control", str(pose), *flags, "--out", str(tmp_path / "x.png"), "--config", str(config)
    )
    assert code == 2
    assert err.startswith(message) and err.count("\n") == 1


def test_a_bad_control_image_is_one_line(capsys, tmp_path: Path, config: Path) -> None:
    broken = tmp_path / "notes.png"
    broken.write_text("not an image")
    args = ("--control", str(broken), "--control-model", "tiny-depth", "--out", str(tmp_path / "x.png"))
    code, _, err = run(capsys, *BASE, *args, "--config", str(config))
    assert code == 2 and err.startswith("sdbot: error: ControlNet unit 1's image (notes.png) is not a PNG")


def test_models_lists_controlnets_with_their_family(capsys, config: Path, models_dir: Path) -> None:
    (models_dir / "ControlNet" / "control_sd15_old.pth").write_bytes(b"pickle")
    code, stdout, err = run(capsys, "models", "--config", str(config))
    assert code == 0, err
    assert "  control_tiny_sd15_canny  [SD 1.x]  (" in stdout
    assert "  tiny-depth  [SD 1.x]  (" in stdout
    assert "  tiny_xl_canny  [SDXL]  (" in stdout
    assert "ControlNet preprocessors: none, canny, invert, tile_resample" in stdout
    assert "  control_sd15_old  " not in stdout  # refused while allow_pickle is off, and said so:
    assert "refused: control_sd15_old.pth (pickle format; set [engine] allow_pickle = true to allow it)" in stdout
