"""Start images and masks from users: checked before anything is decoded, then made into plain RGB as A1111 would.

An attachment is untrusted input. Checks, in order: the byte count; the format by its first bytes (PNG, JPEG or
WebP only, whatever the file is called); the pixel count from the header alone, so a decompression bomb (a small
file that decodes to gigapixels) is refused before decoding; then the decode itself, bounded by Pillow's own
bomb guard. The decoded image gets its EXIF orientation applied (phones store portraits sideways); a start image
then has any alpha composited over white, A1111's default img2img background (a mask keeps its alpha: it may be
the mask, engine.render.masking). Resizing to the job's size follows A1111's
`images.resize_image` for its three modes.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.errors import EngineError

if TYPE_CHECKING:
    from PIL import Image

    from engine.config import Limits

FORMATS = ("PNG", "JPEG", "WEBP")
BACKGROUND = (255, 255, 255)


def sniff_format(data: bytes) -> str | None:
    """PNG, JPEG or WEBP from the file's first bytes; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


def check_input_bytes(data: bytes, limits: Limits, name: str = "the image") -> str:
    """The format of `data` if its size and magic bytes are acceptable; EngineError saying what is allowed."""
    if len(data) > limits.max_input_bytes:
        raise EngineError(f"{name} is {_mib(len(data))}; the limit is {_mib(limits.max_input_bytes)}")
    fmt = sniff_format(data)
    if fmt is None:
        raise EngineError(f"{name} is not a PNG, JPEG or WebP image (checked by its content, not its name)")
    return fmt


def open_input_image(data: bytes, limits: Limits, name: str = "the image") -> Image.Image:
    """`data` decoded with its EXIF orientation applied, alpha kept, or EngineError; nothing is decoded before the
    size and pixel checks pass. Start images are then flattened (`load_input_image`); masks read their alpha."""
    from PIL import Image, ImageOps

    fmt = check_input_bytes(data, limits, name)
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as image:
            width, height = image.size
            if width * height > limits.max_input_pixels:
                raise EngineError(
                    f"{name} is {width}x{height} = {width * height:,} pixels; the limit is "
                    f"{limits.max_input_pixels:,} pixels (a larger image is refused before decoding)"
                )
            image.seek(0)  # the first frame of an animation
            image.load()
            return ImageOps.exif_transpose(image) or image.copy()
    except EngineError:
        raise
    except Image.DecompressionBombError:
        raise EngineError(
            f"{name} claims more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels; the limit is "
            f"{limits.max_input_pixels:,} pixels (refused before decoding)"
        ) from None
    except Exception:  # Pillow raises many types for damaged files (OSError, SyntaxError, ValueError...)
        raise EngineError(f"{name} could not be decoded: it is damaged or not really a {fmt} image") from None


def load_input_image(data: bytes, limits: Limits, name: str = "the image") -> Image.Image:
    """`data` as an RGB image, or EngineError; nothing is decoded before the size and pixel checks pass."""
    return flatten(open_input_image(data, limits, name))


def read_input_bytes(path: str | os.PathLike[str], limits: Limits, what: str = "the init image") -> bytes:
    """The bytes of the image file at `path` (`what` it is, for the message), its size checked before reading
    (decoding is the caller's)."""
    try:
        size = os.path.getsize(path)
        if size > limits.max_input_bytes:
            raise EngineError(f"{os.fspath(path)} is {_mib(size)}; the limit is {_mib(limits.max_input_bytes)}")
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as err:
        raise EngineError(f"cannot read {what} {os.fspath(path)!r}: {err.strerror or err}") from None


def read_input_image(path: str | os.PathLike[str], limits: Limits) -> Image.Image:
    """The image file at `path`, with `load_input_image`'s checks (the size is checked before reading)."""
    return load_input_image(read_input_bytes(path, limits), limits, name=os.path.basename(os.fspath(path)))


def png_size_bound(pixels: int) -> int:
    """The most bytes an RGB PNG of `pixels` pixels takes, stored uncompressed: 3 bytes a pixel and a filter byte
    a row (at most one a pixel), deflate's and the chunks' framing (a few bytes per 64 KiB), and the header."""
    raw = 4 * pixels
    return raw + raw // 1024 + 64 * 1024


def checked_input_limits(limits: Limits) -> Limits:
    """The limits for reading a start image again after it passed the checks on what the member sent (the bot's
    cleaned PNG; the file `sdbot render --init-image` checked). `max_input_bytes` is about what was sent: the
    cleaned PNG of a well-compressed JPEG can be several times larger, and the bot must never refuse what it saved
    itself. Its pixels were checked, so its bytes are bounded by a PNG of `max_input_pixels` pixels, plus what the
    file sent may have carried over (an ICC profile)."""
    most = limits.max_input_bytes + png_size_bound(limits.max_input_pixels)
    return dataclasses.replace(limits, max_input_bytes=most)


def carried_image(path: str, data: bytes, limits: Limits, what: str = "") -> Image.Image:
    """A job's image: the bytes it carries from the bot's host (`GenerationRequest.portable`), else the file at
    `path` (the bot's saved copy, or the CLI's file: read with `checked_input_limits`); `what` names it in errors
    ("ControlNet unit 2's image"), else its file name does."""
    name = f"{what} ({os.path.basename(path)})" if what else os.path.basename(path)
    checked = checked_input_limits(limits)
    return load_input_image(data or read_input_bytes(path, checked), checked, name=name)


def flatten(image: Image.Image) -> Image.Image:
    """RGB, with transparency composited over white (A1111's `images.flatten` with its default background)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def size_multiple(family: str) -> int:
    """What a default size rounds to: SDXL's training buckets are multiples of 64, SD 1.x/2.x's grid is 8."""
    return 64 if family == "sdxl" else 8


def default_size(width: int, height: int, limits: Limits, multiple: int = 8) -> tuple[int, int]:
    """The image's own size, scaled down to fit `max_pixels` and `max_side`, sides rounded to `multiple`."""
    scale = min(1.0, math.sqrt(limits.max_pixels / (width * height)), limits.max_side / max(width, height))
    w = max(64, int(width * scale) // multiple * multiple)
    h = max(64, int(height * scale) // multiple * multiple)
    while w * h > limits.max_pixels:  # the 64 floor on a very thin image
        if w >= h:
            w -= multiple
        else:
            h -= multiple
    return w, h


def resize_image(
    image: Image.Image,
    width: int,
    height: int,
    mode: str,
    upscale: Callable[[Image.Image, int, int], Image.Image] | None = None,
) -> Image.Image:
    """A1111's `images.resize_image`: just (stretch), crop (fill and centre-crop), fill (fit, stretch edges).

    `upscale(image, w, h)` enlarges when the image must grow (A1111's "Upscaler for img2img"); else Lanczos.
    """
    from PIL import Image

    def resize(im: Image.Image, w: int, h: int) -> Image.Image:
        if upscale is not None and (w > im.width or h > im.height):
            return upscale(im, w, h)
        return im.resize((w, h), Image.Resampling.LANCZOS)

    if mode == "just":
        return resize(image, width, height)
    ratio, src_ratio = width / height, image.width / image.height
    if mode == "crop":
        src_w = width if ratio > src_ratio else image.width * height // image.height
        src_h = height if ratio <= src_ratio else image.height * width // image.width
        resized = resize(image, src_w, src_h)
        out = Image.new("RGB", (width, height))
        out.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return out
    if mode != "fill":
        raise EngineError(f"resize mode must be just, crop or fill (got {mode!r})")
    src_w = width if ratio < src_ratio else image.width * height // image.height
    src_h = height if ratio >= src_ratio else image.height * width // image.width
    resized = resize(image, src_w, src_h)
    out = Image.new("RGB", (width, height))
    out.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < src_ratio:
        fill = height // 2 - src_h // 2
        if fill > 0:
            out.paste(resized.resize((width, fill), box=(0, 0, width, 0)), box=(0, 0))
            out.paste(
                resized.resize((width, fill), box=(0, resized.height, width, resized.height)), box=(0, fill + src_h)
            )
    elif ratio > src_ratio:
        fill = width // 2 - src_w // 2
        if fill > 0:
            out.paste(resized.resize((fill, height), box=(0, 0, 0, height)), box=(0, 0))
            out.paste(
                resized.resize((fill, height), box=(resized.width, 0, resized.width, height)), box=(fill + src_w, 0)
            )
    return out
