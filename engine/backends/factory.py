"""`make_worker`: the backend that `[engine] backend` and `isolation` name, built but not started.

It lives apart from the `Backend` Protocol (engine/backends/base.py) because it imports every backend, and every
backend imports the Protocol's module.
"""

from __future__ import annotations

from engine.backends.base import BACKENDS, Backend
from engine.config import EngineConfig


def make_worker(config: EngineConfig) -> Backend:
    """The worker for `config.backend`, not started."""
    if config.backend == "ray":
        from engine.backends.ray_backend import RayWorker

        return RayWorker(config)
    if config.backend == "local" and config.isolation == "process":
        from engine.backends.process import ProcessWorker

        return ProcessWorker(config)
    if config.backend == "local" and config.isolation == "thread":
        from engine.backends.worker import Worker

        return Worker(config)
    if config.backend == "local":
        raise ValueError(f"unknown engine isolation {config.isolation!r}; expected one of process, thread")
    raise ValueError(f"unknown engine backend {config.backend!r}; expected one of {', '.join(BACKENDS)}")
