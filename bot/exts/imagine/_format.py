"""Text for a job's messages: progress lines and the final line (the parameters embed is shared:
`bot.exts.common.formatting`). Pure, within Discord's limits."""

from __future__ import annotations

from collections.abc import Sequence

from bot.exts.common.formatting import clip, parameters_embed

__all__ = ["CONTENT_LIMIT", "clip", "final_content", "parameters_embed", "progress_line"]

CONTENT_LIMIT = 2000


def progress_line(
    job_id: int, state: str, *, position: int | None = None, step: int | None = None, total: int | None = None
) -> str:
    if state == "queued":
        ahead = "next up" if position is None or position <= 1 else f"position {position}"
        return f"⏳ Job #{job_id} queued: {ahead}"
    if state == "step" and step is not None and total:
        filled = round(10 * step / total)
        return f"🎨 Job #{job_id} rendering: {step}/{total} `{'█' * filled}{'░' * (10 - filled)}`"
    if state == "cells" and step is not None and total:
        filled = round(10 * step / total)
        return f"🎨 Job #{job_id} grid: {step}/{total} cells `{'█' * filled}{'░' * (10 - filled)}`"
    if state == "started":
        return f"🎨 Job #{job_id} rendering…"
    if state == "resumed":
        return f"🔁 Job #{job_id} resumed after a restart"
    return f"Job #{job_id}: {state}"


def final_content(job_id: int, mention: str | None, notes: Sequence[str], count: int, what: str | None = None) -> str:
    """The result's text: the job is ready (or `what` is), then each note in small print (the render's, the
    upload's)."""
    head = f"{mention} " if mention else ""
    what = what or ("your image is ready" if count == 1 else f"your {count} images are ready")
    text = f"{head}✅ Job #{job_id}: {what}"
    for note in notes:
        text += f"\n-# {note}"
    return clip(text, CONTENT_LIMIT)
