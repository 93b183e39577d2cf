"""Start images for img2img: an attachment (of /imagine or of a message for Remix), or one of a job's images; and
inpainting masks: an attachment (/imagine `mask:`, Remix), or a Vary (Region) region drawn on a job's image; and
ControlNet images (an attachment of /imagine, or of a message for Use as control), kept as start images are.

An attachment is checked before it is downloaded (its declared size), then by content (`engine.render.input_image`:
format, pixel count before decoding, EXIF, alpha), in a thread; what is kept is the cleaned RGB image (a mask: its
binary form, white = change) as a PNG named by its hash under `<outputs_dir>/inputs/`, so a restart, the
moderators and the engine all read the same checked file. A refused image raises `UserError` before any job exists.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord

from bot.errors import UserError
from bot.option_spec import (
    EngineError,
    Limits,
    binary_mask,
    default_size,
    load_input_image,
    open_input_image,
    parse_region,
    region_mask,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
VARY = {"subtle": 0.35, "strong": 0.7}


@dataclass(frozen=True)
class StartImage:
    path: Path
    width: int
    height: int
    label: str  # where it came from, for the embed and /info


def first_image(message: discord.Message) -> discord.Attachment | None:
    """The first attachment of `message` that looks like an image (by content type or name)."""
    for attachment in message.attachments:
        kind = (attachment.content_type or "").split(";")[0]
        if kind.startswith("image/") or attachment.filename.lower().endswith(IMAGE_SUFFIXES):
            return attachment
    return None


def check_declared_size(attachment: discord.Attachment, limits: Limits, what: str = "a start image") -> None:
    """Refuse an attachment Discord says is too large, without downloading it."""
    if attachment.size > limits.max_input_bytes:
        raise UserError(
            f"{attachment.filename} is {attachment.size / 2**20:.1f} MiB; the limit for {what} "
            f"is {limits.max_input_bytes / 2**20:.1f} MiB"
        )


async def save_attachment(attachment: discord.Attachment, folder: Path, limits: Limits) -> StartImage:
    check_declared_size(attachment, limits)
    return await asyncio.to_thread(_save, await _download(attachment), folder, limits, attachment.filename)


async def save_mask_attachment(attachment: discord.Attachment, folder: Path, limits: Limits) -> StartImage:
    """The mask attachment, checked as a start image is, kept as its binary PNG (its own size: the engine
    stretches it to the image)."""
    check_declared_size(attachment, limits, "a mask")
    return await asyncio.to_thread(_save_mask, await _download(attachment), folder, limits, attachment.filename)


async def _download(attachment: discord.Attachment) -> bytes:
    try:
        return await attachment.read()
    except discord.HTTPException as exc:
        raise UserError(f"could not download {attachment.filename} from Discord ({exc.status}); try again") from None


async def save_from_url(
    http, url: str, filename: str, folder: Path, limits: Limits, *, mask: bool = False
) -> StartImage:
    """The attachment of a journaled command (its image, or its `mask`), downloaded again after a restart
    (Discord's signed attachment URLs live for about a day; the journal's entries for minutes); UserError when it
    is no longer there."""
    what = "mask" if mask else "image"
    try:
        data = await http.get_from_cdn(url)
    except discord.HTTPException:
        raise UserError(
            f"its {what} ({filename}) could not be downloaded again after the restart; send it again"
        ) from None
    return await asyncio.to_thread(_save_mask if mask else _save, data, folder, limits, filename)


def inputs_dir(config) -> Path:
    """Where checked start images are kept (`<outputs_dir>/inputs/`)."""
    return config.outputs_dir / "inputs"


def _save(data: bytes, folder: Path, limits: Limits, label: str) -> StartImage:
    try:
        image = load_input_image(data, limits, name=label)
    except EngineError as exc:
        raise UserError(str(exc)) from None
    return StartImage(_keep(image, folder), image.width, image.height, f"attachment {label}")


def _save_mask(data: bytes, folder: Path, limits: Limits, label: str) -> StartImage:
    try:
        mask = binary_mask(open_input_image(data, limits, name=f"the mask {label}"))
    except EngineError as exc:
        raise UserError(str(exc)) from None
    return StartImage(_keep(mask, folder), mask.width, mask.height, f"attachment {label}")


def save_region_mask(region: str, width: int, height: int, folder: Path) -> Path:
    """The mask of a Vary (Region) region (grid cells or a box in percent) on a `width`×`height` image, kept."""
    try:
        boxes = parse_region(region)
    except EngineError as exc:
        raise UserError(str(exc)) from None
    return _keep(region_mask(boxes, width, height), folder)


def _keep(image, folder: Path) -> Path:
    """`image` as a PNG named by its hash in `folder` (written once, atomically)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    png = buffer.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(png).hexdigest()[:24]}.png"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(png)
        tmp.replace(path)
    return path


def with_start_image(options: dict[str, Any], start: StartImage, limits: Limits) -> dict[str, Any]:
    """`options` starting from `start`: the size defaults to the image's aspect within `max_pixels`."""
    out = {**options, "init_image": str(start.path)}
    if "width" not in out and "aspect_ratio" not in out:
        out["width"], out["height"] = default_size(start.width, start.height, limits)
    return out


def with_control_image(options: dict[str, Any], image: StartImage, limits: Limits, sized: bool) -> dict[str, Any]:
    """`options` with `image` as the first ControlNet unit's control image (a preset's units share it); with
    `sized` (no start image) the size defaults to its aspect, as a start image's does."""
    units = [dict(unit) for unit in options.get("controls") or [{}]]
    units[0]["image"] = str(image.path)
    out = {**options, "controls": units}
    if sized and "width" not in out and "aspect_ratio" not in out:
        out["width"], out["height"] = default_size(image.width, image.height, limits)
    return out


def kept_start_image(path: str, label: str) -> StartImage:
    """The start image a job used, to start from again (Edit of an img2img result); UserError if it is gone."""
    try:
        width, height = image_size(Path(path))
    except OSError:
        raise UserError(
            f"the start image ({label}) is gone (deleted), so the edit cannot start from it; "
            f"attach it again with /imagine"
        ) from None
    return StartImage(Path(path), width, height, label)


def image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size
