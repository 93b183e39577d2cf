"""Awaiting what may fail without failing its caller: progress edits, progress reports and notices to members
are best effort, so a dropped connection or a refused message costs a log line, never the job or the decision."""

from __future__ import annotations

import logging
from collections.abc import Awaitable

log = logging.getLogger(__name__)


async def quietly(step: Awaitable[object], what: str) -> None:
    """Await `step`; any failure is logged as "`what` failed" (with its traceback) and goes no further."""
    try:
        await step
    except Exception:
        log.warning("%s failed", what, exc_info=True)
