"""A controllable engine for tests: the real engine (real diffusers on the tiny model) with a floor on each step.

Tests that need a render to outlast something (an edit period, a preview period, a timeout, a click on Cancel)
used to ask for 100-150 steps at 256x256 and hope the CPU was slow enough; on a fast machine the render ended
first. `PacedEngine(config, step_s)` makes every step last at least `step_s` seconds, so a render of N tiny steps
lasts at least N * step_s whatever the machine, while the images are still the real pipeline's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from engine.config import EngineConfig
from engine.render.pipeline import Engine


class PacedEngine(Engine):
    def __init__(self, config: EngineConfig, step_s: float) -> None:
        super().__init__(config)
        self.step_s = step_s

    def render_batch(self, requests, on_step=None, should_stop=None):
        def paced(step: int, total: int, latents: Any) -> None:
            if on_step is not None:
                on_step(step, total, latents)
            time.sleep(self.step_s)

        return super().render_batch(requests, paced, should_stop)


def paced_worker(step_s: float) -> Callable[[EngineConfig], Any]:
    """A `make_worker` for `bot.app.serve`: the in-process worker on a `PacedEngine`."""
    from engine.backends.worker import Worker

    return lambda config: Worker(config, engine=PacedEngine(config, step_s))
