"""`sdbot render --init-image F --mask M [--mask-blur N] [--mask-mode …] [--masked-content …] [--inpaint-area …]
[--padding N] [--strength D]` and `--outpaint L,T,R,B`, exactly as written, on tiny SD 1.x and SDXL models."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.cli import main
from engine.infotext import parse_infotext, read_png_infotext
from engine.render.masking import blur
from tests.engine.render.test_input_image import png_header_only

BOX = (20, 16, 44, 40)


@pytest.fixture
def config(tmp_path: Path, models_dir: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[engine]\nmodels_dir = "{models_dir}"\nmax_pixels = 16384\nmax_input_bytes = 100000\n')
    return path


@pytest.fixture
def sdxl_config(tmp_path: Path, tiny_sdxl: Path) -> Path:
    root = tmp_path / "xl-models"
    shutil.copytree(tiny_sdxl, root / "tiny-sdxl")
    path = tmp_path / "xl.toml"
    path.write_text(f'[engine]\nmodels_dir = "{root}"\nmax_pixels = 16384\n')
    return path


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(4)
    paths = {"init": tmp_path / "init.png", "mask": tmp_path / "mask.png"}
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB").save(paths["init"])
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, BOX)
    mask.save(paths["mask"])
    return paths


def infotext_params(png: Path) -> dict[str, str]:
    text = read_png_infotext(png.read_bytes())
    assert text is not None
    return parse_infotext(text).params


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def common(out: Path, config: Path) -> list[str]:
    return ["--steps", "4", "--seed", "2", "--sampler", "Euler", "--out", str(out), "--config", str(config)]


def inpaint(capsys, images: dict[str, Path], mask: Path | None, *flags: str) -> tuple[int, str, str]:
    """`sdbot render "a cat" --init-image INIT --mask MASK FLAGS…` (the fixture's mask unless another is given)."""
    start = ["--init-image", str(images["init"]), "--mask", str(mask or images["mask"])]
    return run(capsys, "render", "a cat", *start, *flags)


def outside(mask: Image.Image, sigma: int) -> np.ndarray:
    return np.asarray(blur(mask, sigma)) == 0


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_inpaint_from_the_command_line_with_every_flag(capsys, tmp_path, config, sdxl_config, images, family):
    out = tmp_path / "inpaint.png"
    code, stdout, err = inpaint(
        capsys,
        images,
        None,
        "--mask-blur",
        "2",
        "--mask-mode",
        "masked",
        "--masked-content",
        "noise",
        "--inpaint-area",
        "masked",
        "--padding",
        "8",
        "--strength",
        "0.6",
        *common(out, config if family == "sd15" else sdxl_config),
    )
    assert code == 0, err
    assert stdout.startswith(str(out))
    params = infotext_params(out)
    expected = {
        "Denoising strength": "0.6",
        "Mask blur": "2",
        "Inpaint area": "Only masked",
        "Masked area padding": "8",
        "Masked content": "latent noise",
    }
    assert {k: params.get(k) for k in expected} == expected and "Mask mode" not in params
    result, original = np.asarray(Image.open(out)), np.asarray(Image.open(images["init"]))
    keep = outside(Image.open(images["mask"]), 2)
    assert result.shape == original.shape and np.array_equal(result[keep], original[keep])


def test_unmasked_mode_and_defaults(capsys, tmp_path, config, images):
    out = tmp_path / "unmasked.png"
    code, _, err = inpaint(capsys, images, None, "--mask-mode", "unmasked", *common(out, config))
    assert code == 0, err
    params = infotext_params(out)
    assert params["Mask mode"] == "Inpaint not masked" and params["Mask blur"] == "4"
    assert params["Denoising strength"] == "0.75" and "Inpaint area" not in params and "Masked content" not in params
    inverted = Image.eval(Image.open(images["mask"]).convert("L"), lambda v: 255 - v)
    keep = outside(inverted, 4)  # the white box is kept now
    assert np.array_equal(np.asarray(Image.open(out))[keep], np.asarray(Image.open(images["init"]))[keep])


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_outpaint_from_the_command_line(capsys, tmp_path, config, sdxl_config, images, family):
    out = tmp_path / "outpaint.png"
    code, _, err = run(
        capsys,
        "render",
        "a cat",
        "--init-image",
        str(images["init"]),
        "--outpaint",
        "0,0,64,0",
        *common(out, config if family == "sd15" else sdxl_config),
    )
    assert code == 0, err
    result = np.asarray(Image.open(out))
    assert result.shape == (64, 128, 3)  # the canvas grew by 64 on the right
    border = Image.new("L", (128, 64), 255)
    border.paste(0, (0, 0, 64, 64))
    keep = outside(border, 4)
    assert keep[:, :50].all() and np.array_equal(result[keep], np.asarray(Image.open(images["init"]))[keep[:, :64]])
    assert infotext_params(out)["Masked content"] == "fill"


def test_a_mask_of_another_size_is_resized_to_the_image(capsys, tmp_path, config, images):
    small = tmp_path / "small-mask.png"
    Image.open(images["mask"]).resize((32, 32), Image.Resampling.NEAREST).save(small)
    outs = []
    for mask in (small, images["mask"]):
        out = tmp_path / f"{mask.stem}.png"
        code, _, err = inpaint(capsys, images, mask, *common(out, config))
        assert code == 0, err
        outs.append(np.asarray(Image.open(out)))
    assert np.array_equal(outs[0], outs[1])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"GIF89a not really", "the mask m.png is not a PNG, JPEG or WebP image (checked by its content"),
        (png_header_only(50_000, 50_000), "the mask m.png claims more than"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 150_000, "m.png is 146 KiB; the limit is 98 KiB"),
    ],
)
def test_bad_masks_are_refused_in_one_line(capsys, tmp_path, config, images, content, message):
    bad = tmp_path / "m.png"
    bad.write_bytes(content)
    code, stdout, err = inpaint(capsys, images, bad, *common(tmp_path / "o.png", config))
    assert code != 0 and stdout == ""
    assert err.startswith("sdbot: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mask", "m.png"], "sdbot: error: a mask needs a start image (the image to change)"),
        (["--outpaint", "0,0,64,0"], "sdbot: error: outpaint needs a start image"),
        (["--init-image", "{init}", "--outpaint", "64"], "sdbot: error: outpaint must be four whole numbers L,T,R,B"),
    ],
)
def test_inpaint_flags_without_what_they_need_are_refused(capsys, tmp_path, config, images, args, message):
    args = [a.replace("{init}", str(images["init"])) for a in args]
    code, _, err = run(capsys, "render", "a cat", "--size", "64x64", *args, *common(tmp_path / "o.png", config))
    assert code != 0 and err.startswith(message) and err.count("\n") == 1


def test_an_inpainting_tiny_model_from_the_command_line(capsys, tmp_path, images):
    models = tmp_path / "models"
    code, _, err = run(capsys, "tiny-model", str(models / "tiny-inpainting"), "--inpainting")
    assert code == 0, err
    config = tmp_path / "c.toml"
    config.write_text(f'[engine]\nmodels_dir = "{models}"\nmax_pixels = 16384\n')
    out = tmp_path / "inpainting.png"
    code, _, err = inpaint(capsys, images, None, *common(out, config))
    assert code == 0, err
    assert infotext_params(out)["Conditional mask weight"] == "1.0"
