"""Fault hooks for the engine child (`engine.process_backend`, `SDBOT_ENGINE_CHILD_HOOK=tests.engine.child_hooks:
crash_on_prompt`), called in the child with its worker: they run there, where a crash is what is tested.

Prompts choose the fault: "abort-always" calls os.abort() (SIGABRT, as a segfaulting native library would die)
on every try, "abort-once" only the first time (remembered in `$SDBOT_TEST_MARKERS`, since the retry runs in a
new child).
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
