"""Which worker renders (issue 8): `[engine] backend = "local"` (the default) or `"ray"`
(`engine.ray_backend.RayWorker`, engine replicas on a Ray cluster; Ray is imported only then). The local one runs
in a child process the bot restarts when it dies (`isolation = "process"`, the default:
`engine.process_backend.ProcessWorker`, issue 16) or in a thread of the bot (`"thread"`: `engine.worker.Worker`).
All offer what the bot uses: start, submit -> JobHandle, cancel, position, close."""

from __future__ import annotations

from typing import Any

from engine.config import EngineConfig

BACKENDS = ("local", "ray")


def make_worker(config: EngineConfig) -> Any:
    """The worker for `config.backend`, not started."""
    if config.backend == "ray":
        from engine.ray_backend import RayWorker

        return RayWorker(config)
    if config.backend == "local" and config.isolation == "process":
        from engine.process_backend import ProcessWorker

        return ProcessWorker(config)
    if config.backend == "local" and config.isolation == "thread":
        from engine.worker import Worker

        return Worker(config)
    if config.backend == "local":
        raise ValueError(f"unknown engine isolation {config.isolation!r}; expected one of process, thread")
    raise ValueError(f"unknown engine backend {config.backend!r}; expected one of {', '.join(BACKENDS)}")
