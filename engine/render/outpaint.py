"""Outpainting: the canvas grows by left, top, right and bottom pixels, the new border is the mask (pure).

The grown canvas is laid out directly at the job's size: with the job's size equal to the grown canvas, the image is
pasted unscaled, so its pixels stay where they were (the inpaint's composite keeps them exact beyond the blur);
with a smaller job size (a server's pixel cap, Zoom Out's same-size canvas) the image is shrunk into its place with
Lanczos first, so no black border bleeds into it. Zoom Out and Pan are margins of this one kind: Zoom Out grows every
side so that the image is 1/z of the canvas, and Pan grows one side by half the image.
"""

from __future__ import annotations

import re

from PIL import Image

from engine.errors import EngineError

Margins = tuple[int, int, int, int]  # left, top, right, bottom, in the image's pixels
Box = tuple[int, int, int, int]  # x1, y1, x2, y2 (x2, y2 exclusive)

MAX_MARGIN = 4096
PAN_DIRECTIONS = ("left", "right", "up", "down")
ZOOM_FACTORS = (1.5, 2.0)
_MARGINS = re.compile(r"\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*")


def parse_margins(text: str) -> Margins:
    """'0,0,256,0' -> (0, 0, 256, 0): four whole pixel counts L,T,R,B, at least one of them above 0."""
    found = _MARGINS.fullmatch(text) if isinstance(text, str) else None
    if found is None:
        raise EngineError(
            f"outpaint must be four whole numbers L,T,R,B: the pixels to add on the left, top, right and bottom, "
            f"e.g. 0,0,256,0 (got {text!r})"
        )
    left, top, right, bottom = (int(n) for n in found.groups())
    return check_margins((left, top, right, bottom))


def check_margins(margins: Margins) -> Margins:
    """`margins` if each is a whole number from 0 to MAX_MARGIN and they grow the canvas; else EngineError."""
    if len(margins) != 4 or any(isinstance(m, bool) or not isinstance(m, int) for m in margins):
        raise EngineError(f"outpaint must be four whole numbers L,T,R,B (got {margins!r})")
    if any(not 0 <= m <= MAX_MARGIN for m in margins):
        raise EngineError(f"each outpaint margin must be from 0 to {MAX_MARGIN} pixels (got {_text(margins)})")
    if not any(margins):
        raise EngineError("outpaint 0,0,0,0 adds nothing: give the pixels to add on at least one side")
    return margins


def _text(margins: Margins) -> str:
    return ",".join(str(m) for m in margins)


def grown_size(width: int, height: int, margins: Margins) -> tuple[int, int]:
    """The canvas an image of `width`×`height` grows to."""
    left, top, right, bottom = margins
    return width + left + right, height + top + bottom


def image_box(width: int, height: int, margins: Margins, size: tuple[int, int]) -> Box:
    """Where the image lies in the grown canvas laid out at `size` (the canvas scaled to it on each axis)."""
    canvas_w, canvas_h = grown_size(width, height, margins)
    sx, sy = size[0] / canvas_w, size[1] / canvas_h
    left, top = margins[0], margins[1]
    return round(left * sx), round(top * sy), round((left + width) * sx), round((top + height) * sy)


def canvas_and_mask(image: Image.Image, margins: Margins, size: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
    """The grown canvas at `size` (black where it is new, as A1111's outpainting scripts start it) and its mask
    (`L`: 255 on the new border = change, 0 over the image)."""
    x1, y1, x2, y2 = image_box(image.width, image.height, margins, size)
    placed = image.convert("RGB")
    if placed.size != (x2 - x1, y2 - y1):
        placed = placed.resize((x2 - x1, y2 - y1), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", size)
    canvas.paste(placed, (x1, y1))
    mask = Image.new("L", size, 255)
    mask.paste(0, (x1, y1, x2, y2))
    return canvas, mask


def zoom_out_margins(width: int, height: int, factor: float) -> Margins:
    """Zoom Out by `factor`: every side grows so the canvas is `factor` times the image, the image centred."""
    if factor not in ZOOM_FACTORS:
        raise EngineError(f"zoom out must be one of {', '.join(f'{z:g}' for z in ZOOM_FACTORS)} (got {factor!r})")
    extra_w, extra_h = round(width * factor) - width, round(height * factor) - height
    return extra_w // 2, extra_h // 2, extra_w - extra_w // 2, extra_h - extra_h // 2


def pan_margins(width: int, height: int, direction: str) -> Margins:
    """Pan: the side towards `direction` grows by half the image's side."""
    grow = {"left": (width // 2, 0, 0, 0), "up": (0, height // 2, 0, 0)}
    grow |= {"right": (0, 0, width // 2, 0), "down": (0, 0, 0, height // 2)}
    if direction not in grow:
        raise EngineError(f"pan must be one of {', '.join(PAN_DIRECTIONS)} (got {direction!r})")
    return grow[direction]
