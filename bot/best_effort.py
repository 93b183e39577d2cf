"""Awaiting what may fail without failing its caller: progress edits, progress reports and notices to members
are best effort, so a dropped connection or a refused message costs a log line, never the job or the decision."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


async def quietly(step: Awaitable[T], what: str) -> T | None:
    """Await `step` and return what it returns; any failure is logged as "`what` failed" (with its traceback),
    goes no further, and returns None."""
    try:
        return await step
    except Exception:
        log.warning("%s failed", what, exc_info=True)
        return None
