"""Which worker renders (issue 8): `[engine] backend = "local"` (the in-process `engine.worker.Worker`, the
default) or `"ray"` (`engine.ray_backend.RayWorker`, engine replicas on a Ray cluster; Ray is imported only
then). Both offer what the bot uses: start, submit -> JobHandle, cancel, position, close."""

from __future__ import annotations

from typing import Any

from engine.config import EngineConfig

BACKENDS = ("local", "ray")


def make_worker(config: EngineConfig) -> Any:
    """The worker for `config.backend`, not started."""
    if config.backend == "ray":
        from engine.ray_backend import RayWorker

        return RayWorker(config)
    if config.backend == "local":
        from engine.worker import Worker

        return Worker(config)
    raise ValueError(f"unknown engine backend {config.backend!r}; expected one of {', '.join(BACKENDS)}")
