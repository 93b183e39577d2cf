"""`sdbot render --init-image/--strength/--resize-mode` and `--hires…`: the engine checked without Discord."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from bot.cli import main
from engine.infotext import parse_infotext, read_png_infotext


@pytest.fixture
def config(tmp_path: Path, models_dir: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[engine]\nmodels_dir = "{models_dir}"\nmax_pixels = 16384\n')
    return path


@pytest.fixture
def start(tmp_path: Path) -> Path:
    path = tmp_path / "start.webp"
    buffer = io.BytesIO()
    Image.new("RGB", (240, 160), (30, 90, 200)).save(buffer, format="WEBP")
    path.write_bytes(buffer.getvalue())
    return path


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_img2img_defaults_to_the_images_aspect_within_max_pixels(capsys, tmp_path, config, start):
    out = tmp_path / "i2i.png"
    code, stdout, err = run(
        capsys,
        "render",
        "a photo of a cat",
        "--init-image",
        str(start),
        "--strength",
        "0.4",
        "--resize-mode",
        "crop",
        "--steps",
        "4",
        "--seed",
        "2",
        "--sampler",
        "Euler",
        "--out",
        str(out),
        "--config",
        str(config),
    )
    assert code == 0, err
    image = Image.open(out)
    assert image.size == (152, 104)  # 240x160 scaled down to fit 16384 pixels, sides multiples of 8
    params = parse_infotext(read_png_infotext(out.read_bytes())).params
    assert params["Denoising strength"] == "0.4" and params["Size"] == "152x104"


def test_hires_from_the_command_line(capsys, tmp_path, config):
    out = tmp_path / "hr.png"
    code, _, err = run(
        capsys,
        "render",
        "a cat",
        "--size",
        "64x64",
        "--steps",
        "2",
        "--hires",
        "2",
        "--hires-steps",
        "1",
        "--hires-upscaler",
        "Latent (nearest-exact)",
        "--out",
        str(out),
        "--config",
        str(config),
    )
    assert code == 0, err
    assert Image.open(out).size == (128, 128)
    assert "Hires upscaler: Latent (nearest-exact)" in read_png_infotext(out.read_bytes())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not an image at all", "not a PNG, JPEG or WebP image"),
        (None, "cannot read the init image"),
    ],
)
def test_bad_start_images_are_one_line_errors(capsys, tmp_path, config, content, message):
    path = tmp_path / "start.png"
    if content is not None:
        path.write_bytes(content)
    code, _, err = run(
        capsys, "render", "a cat", "--init-image", str(path), "--out", str(tmp_path / "o.png"), "--config", str(config)
    )
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_hires_past_max_pixels_is_refused(capsys, tmp_path, config):
    code, _, err = run(
        capsys,
        "render",
        "a cat",
        "--size",
        "128x128",
        "--hires",
        "2",
        "--out",
        str(tmp_path / "o.png"),
        "--config",
        str(config),
    )
    assert code == 2 and "Hires ×2 makes 256x256" in err


def test_models_lists_upscalers(capsys, config):
    code, stdout, _ = run(capsys, "models", "--config", str(config))
    assert code == 0 and "upscalers: Latent, Latent (antialiased)" in stdout and "Lanczos, Nearest" in stdout
