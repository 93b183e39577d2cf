"""Fault hooks for the engine child (`engine.backends.process`,
`SDBOT_ENGINE_CHILD_HOOK=tests.engine.backends.child_hooks:crash_on_prompt`), called in the child with its worker;
each returns the function the child calls before every render (engine/backends/child.py): they run there, where
a crash is what is tested.

Prompts choose the fault: "abort-always" calls os.abort() (SIGABRT, as a segfaulting native library would die)
on every try, "abort-once" only the first time (remembered in `$SDBOT_TEST_MARKERS`, since the retry runs in a
new child).
`probe_next_job` checks that the next job is already in the child while one renders (no round trip between jobs),
and holds a render until the test says so.
"""

from __future__ import annotations

import os
from pathlib import Path


def crash_on_prompt(worker):
    def inject(attempt) -> None:
        for request in attempt.requests:
            if "abort-always" in request.prompt:
                os.abort()
            if "abort-once" in request.prompt:
                marker = Path(os.environ["SDBOT_TEST_MARKERS"]) / "aborted-once"
                if not marker.exists():
                    marker.write_text(str(os.getpid()))
                    os.abort()

    return inject


def probe_next_job(worker):
    """A render of a prompt with "wait-for-N" waits (up to 30 s) until N other jobs are queued in this child, and
    writes what it saw to `$SDBOT_TEST_MARKERS/next-job`: "ready" or "missing" (the bot had not sent them). A
    render of a prompt with "hold" then waits (up to 30 s) until the test writes `$SDBOT_TEST_MARKERS/go`."""
    import re
    import time

    def inject(attempt) -> None:
        probe(attempt)
        if any("hold" in request.prompt for request in attempt.requests):
            go, deadline = Path(os.environ["SDBOT_TEST_MARKERS"]) / "go", time.monotonic() + 30
            while not go.exists() and time.monotonic() < deadline:
                time.sleep(0.01)

    def probe(attempt) -> None:
        found = re.search(r"wait-for-(\d+)", " ".join(request.prompt for request in attempt.requests))
        if found is None:
            return
        wanted, deadline = int(found.group(1)), time.monotonic() + 30
        while len(worker.queued()) < wanted and time.monotonic() < deadline:
            time.sleep(0.01)
        seen = "ready" if len(worker.queued()) >= wanted else "missing"
        (Path(os.environ["SDBOT_TEST_MARKERS"]) / "next-job").write_text(seen)

    return inject
