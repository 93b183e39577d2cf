"""Start-image checks: formats by content, byte and pixel limits (bombs refused before decoding), EXIF, alpha;
A1111's resize modes and the default size."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from engine.config import Limits
from engine.errors import EngineError
from engine.render.input_image import (
    checked_input_limits,
    default_size,
    load_input_image,
    resize_image,
    size_multiple,
    sniff_format,
)

LIMITS = Limits(max_input_bytes=200_000, max_input_pixels=1000 * 1000)


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height and whose data is a few bytes: a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_accepted_formats_load_as_rgb(fmt):
    data = encode(Image.new("RGB", (40, 30), (10, 200, 30)), fmt)
    assert sniff_format(data) == fmt
    image = load_input_image(data, LIMITS)
    assert image.mode == "RGB" and image.size == (40, 30)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_image_formats_are_refused(fmt):
    data = encode(Image.new("RGB", (8, 8)), fmt)
    with pytest.raises(EngineError, match="not a PNG, JPEG or WebP image"):
        load_input_image(data, LIMITS)


def test_a_non_image_named_png_is_refused_by_content():
    with pytest.raises(EngineError, match="checked by its content"):
        load_input_image(b"#!/bin/sh\necho hi\n", LIMITS)


def test_an_oversized_file_is_refused_before_anything_else():
    with pytest.raises(EngineError, match=r"the limit is 195 KiB"):
        load_input_image(b"\x89PNG\r\n\x1a\n" + b"\0" * 300_000, LIMITS)


@pytest.mark.parametrize("size", [(64, 64), (1, 4096), (4096, 1)])
def test_the_cleaned_png_of_an_image_within_the_pixel_limit_is_always_read_again(size):
    """Noise stored without compression is the largest PNG a member's image can become once cleaned."""
    limits = Limits(max_input_bytes=1024, max_input_pixels=size[0] * size[1])
    noise = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    cleaned = encode(Image.fromarray(noise), "PNG", compress_level=0)
    assert len(cleaned) > limits.max_input_bytes
    assert load_input_image(cleaned, checked_input_limits(limits)).size == size
    with pytest.raises(EngineError, match="the limit is 1 KiB"):
        load_input_image(cleaned, limits)  # what the member sends is held to the limit itself


@pytest.mark.parametrize(
    ("side", "message"),
    [
        (5000, "5000x5000 = 25,000,000 pixels; the limit is 1,000,000"),
        (
            60_000,
            "claims more than .* pixels; the limit is 1,000,000 pixels",
        ),  # Pillow's own guard fires first, also from the header
    ],
)
def test_a_decompression_bomb_is_refused_before_decoding(monkeypatch, side, message):
    data = png_header_only(side, side)
    assert len(data) < 200
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1))
    with pytest.raises(EngineError, match=message):
        load_input_image(data, LIMITS)
    assert decoded == []  # refused from the header alone


def test_a_damaged_image_is_a_clear_error():
    data = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG")
    with pytest.raises(EngineError, match="could not be decoded"):
        load_input_image(data[:60], LIMITS)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    loaded = load_input_image(encode(image, "JPEG", exif=exif, quality=95), LIMITS)
    assert loaded.size == (20, 40)
    top = np.asarray(loaded)[2, 10]
    assert top[2] > 200 and top[0] < 60  # the blue half is now on top


def test_alpha_is_composited_over_white():
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    image.putpixel((0, 0), (0, 0, 255, 255))
    loaded = np.asarray(load_input_image(encode(image, "PNG"), LIMITS))
    assert tuple(loaded[4, 4]) == (255, 255, 255)
    assert tuple(loaded[0, 0]) == (0, 0, 255)


@pytest.mark.parametrize("mode", ["just", "crop", "fill"])
@pytest.mark.parametrize("size", [(64, 96), (96, 64), (80, 80)])
def test_resize_modes_output_size(mode, size):
    image = Image.new("RGB", (120, 50), (9, 9, 9))
    assert resize_image(image, *size, mode).size == size


def test_crop_keeps_the_centre_and_fill_keeps_everything():
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    image.paste((0, 255, 0), (0, 0, 20, 100))  # a green strip at the left edge
    cropped = np.asarray(resize_image(image, 100, 100, "crop"))
    filled = np.asarray(resize_image(image, 100, 100, "fill"))
    assert cropped[50, 1, 1] < 50  # the strip was cropped away
    assert filled[50, 1, 1] > 200  # the whole width fits, the strip is still there
    assert filled[2, 50, 0] > 200  # the top band is stretched from the image's edge, not black


def test_default_size_keeps_the_aspect_within_max_pixels():
    limits = Limits(max_pixels=512 * 512)
    assert default_size(3000, 2000, limits) == (624, 416)
    assert default_size(300, 200, limits) == (296, 200)
    w, h = default_size(4000, 100, limits)
    assert w % 8 == 0 and h == 64 and w * h <= limits.max_pixels


def test_default_sizes_round_to_64_for_sdxl_and_8_for_sd1(tmp_path, tiny_sd15, tiny_sdxl):
    import torch
    from safetensors.torch import save_file

    from engine.models.ldm_keys import SD1_CLIP_PREFIX, SDXL_OPENCLIP_PREFIX, UNET_PREFIX
    from engine.models.loader import ModelFile, checkpoint_family

    files = {
        "sdxl": [UNET_PREFIX + "x", SDXL_OPENCLIP_PREFIX + "transformer.x"],
        "sd1": [UNET_PREFIX + "x", SD1_CLIP_PREFIX + "x"],
    }
    for name, keys in files.items():  # single files: only the header is read
        save_file({k: torch.zeros(1) for k in keys}, tmp_path / f"{name}.safetensors")
    (tmp_path / "old.ckpt").write_bytes(b"not read")
    found = {
        name: checkpoint_family(ModelFile(name, path))
        for name, path in [
            ("xl-folder", tiny_sdxl),
            ("sd-folder", tiny_sd15),
            ("xl-file", tmp_path / "sdxl.safetensors"),
            ("sd-file", tmp_path / "sd1.safetensors"),
            ("pickle", tmp_path / "old.ckpt"),
        ]
    }
    assert found == {"xl-folder": "sdxl", "sd-folder": "sd", "xl-file": "sdxl", "sd-file": "sd", "pickle": "sd"}
    limits = Limits(max_pixels=1024 * 1024)
    assert default_size(1000, 700, limits, size_multiple("sd")) == (1000, 696)
    assert default_size(1000, 700, limits, size_multiple("sdxl")) == (960, 640)
