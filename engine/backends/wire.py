"""Events across a process boundary (the engine child, a Ray replica -> the bot): small picklable tuples.

The images of a finished job cross as their PNG bytes (already encoded by the worker thread) and are decoded
lazily on the bot's side, never re-encoded; previews cross as small PIL images. `Queued` never crosses: positions
are the bot's (its `FairQueue`).
"""

from __future__ import annotations

import io

from PIL import Image

from engine.jobs import Cancelled, Failed, Finished, JobEvent, Started, Step
from engine.render.pipeline import RenderedImage, RenderResult

TERMINAL = ("finished", "failed", "cancelled")


def encode_event(event: JobEvent) -> tuple | None:
    """A worker event as a small picklable tuple; None for `Queued` (positions are the bot's business)."""
    if isinstance(event, Started):
        return ("started", event.batch)
    if isinstance(event, Step):
        return ("step", event.step, event.total, event.preview)
    if isinstance(event, Finished):
        return ("finished", encode_result(event.result))
    if isinstance(event, Failed):
        return ("failed", event.message)
    if isinstance(event, Cancelled):
        return ("cancelled", event.reason)
    return None


def encode_result(result: RenderResult) -> dict:
    """A result with its images as their PNG bytes (already encoded by the worker thread): no raw pixels, and
    not the start image and mask the job carried in (the bot has them)."""
    return dict(
        request=result.request.without_image_data(),
        model=result.model,
        vae=result.vae,
        seconds=result.seconds,
        notes=result.notes,
        images=[(image.png(), image.seed, image.infotext, image.scores) for image in result.images],
    )


def decode_result(data: dict) -> RenderResult:
    images = []
    for png, seed, infotext, scores in data["images"]:
        image = RenderedImage(Image.open(io.BytesIO(png)), seed, infotext, scores)  # decoded on first pixel access
        image.__dict__["png_data"] = png  # the cached PNG: the very bytes the replica made
        images.append(image)
    return RenderResult(
        request=data["request"],
        images=images,
        model=data["model"],
        vae=data["vae"],
        seconds=data["seconds"],
        notes=tuple(data["notes"]),
    )
