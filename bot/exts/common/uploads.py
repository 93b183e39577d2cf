"""Images as Discord attachments: PNG with infotext when they fit the upload limit, else lossless WebP, else
JPEG, saying so; at most 10 per message."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

MAX_ATTACHMENTS = 10
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
_MARGIN = 16 * 1024  # room for the multipart framing and the JSON payload


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


def prepare_uploads(paths: list[Path], limit: int) -> tuple[list[list[Upload]], str | None]:
    """Messages' worth of uploads (≤ 10 each, each message within `limit` bytes) and a note when converted."""
    budget = max(limit - _MARGIN, 1)
    pngs = [Upload(p.name, p.read_bytes()) for p in paths]
    for kind, note in (
        (None, None),
        ("webp", "sent as lossless WebP to fit the upload limit; the PNG with its infotext is kept (use ℹ️)"),
        ("jpeg", "sent as JPEG to fit the upload limit; the PNG with its infotext is kept (use ℹ️)"),
    ):
        uploads = pngs if kind is None else [_convert(u, kind) for u in pngs]
        batches = _pack(uploads, budget)
        if batches is not None:
            return batches, note
    raise ValueError("an image does not fit the upload limit even as JPEG")


def _pack(uploads: list[Upload], budget: int) -> list[list[Upload]] | None:
    batches: list[list[Upload]] = []
    current: list[Upload] = []
    size = 0
    for u in uploads:
        if len(u.data) > budget:
            return None
        if current and (len(current) == MAX_ATTACHMENTS or size + len(u.data) > budget):
            batches.append(current)
            current, size = [], 0
        current.append(u)
        size += len(u.data)
    if current:
        batches.append(current)
    return batches


def _convert(upload: Upload, kind: str) -> Upload:
    image = Image.open(io.BytesIO(upload.data))
    out = io.BytesIO()
    if kind == "webp":
        image.save(out, format="WEBP", lossless=True, quality=100, method=4)
    else:
        image.convert("RGB").save(out, format="JPEG", quality=90)
    return Upload(Path(upload.filename).with_suffix("." + ("webp" if kind == "webp" else "jpg")).name, out.getvalue())
