"""Fault hooks for the engine child (`engine.backends.process`, `SDBOT_ENGINE_CHILD_HOOK=tests.engine.child_hooks:
crash_on_prompt`), called in the child with its worker: they run there, where a crash is what is tested.

Prompts choose the fault: "abort-always" calls os.abort() (SIGABRT, as a segfaulting native library would die)
on every try, "abort-once" only the first time (remembered in `$SDBOT_TEST_MARKERS`, since the retry runs in a
new child).
`probe_next_job` checks that the next job is already in the child while one renders (no round trip between jobs).
"""

from __future__ import annotations

import os
from pathlib import Path


def crash_on_prompt(worker) -> None:
    def inject(attempt) -> None:
        for request in attempt.requests:
            if "abort-always" in request.prompt:
                os.abort()
            if "abort-once" in request.prompt:
                marker = Path(os.environ["SDBOT_TEST_MARKERS"]) / "aborted-once"
                if not marker.exists():
                    marker.write_text(str(os.getpid()))
                    os.abort()

    worker.fault_injector = inject


def probe_next_job(worker) -> None:
    """A render of a prompt with "wait-for-N" waits (up to 30 s) until N other jobs are queued in this child, and
    writes what it saw to `$SDBOT_TEST_MARKERS/next-job`: "ready" or "missing" (the bot had not sent them)."""
    import re
    import time

    def inject(attempt) -> None:
        found = re.search(r"wait-for-(\d+)", " ".join(request.prompt for request in attempt.requests))
        if found is None:
            return
        wanted, deadline = int(found.group(1)), time.monotonic() + 30
        while len(worker.queued()) < wanted and time.monotonic() < deadline:
            time.sleep(0.01)
        seen = "ready" if len(worker.queued()) >= wanted else "missing"
        (Path(os.environ["SDBOT_TEST_MARKERS"]) / "next-job").write_text(seen)

    worker.fault_injector = inject
