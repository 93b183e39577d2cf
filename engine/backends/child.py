"""The engine child process's side (`isolation = "process"`; the bot's side is engine/backends/process.py).

The child runs an `engine.backends.worker.Worker` in given order: the bot chose each batch and its place, so the
child renders them as they come, holding the next one while one renders. Over the pipe:

    in:   ("batch", [(attempt id, request), ...])   a batch to render after the ones before it
          ("cancel", attempt id)                     stop that job at its next step
          ("close",)                                 cancel what runs and exit (EOF, the bot's death, too)
    out:  ("ready", pid)                             the default checkpoint is loaded (or failed to)
          ("rendering", (attempt id, ...))           sent from the worker thread just before a call enters the
                                                     engine: a crash from then on is those jobs'
          ("events", [(attempt id, wire tuple), ...])  one message per burst of events (engine/backends/wire.py)

A finished job's PNG bytes are packed in a thread of the child, so its loop goes on forwarding the next batch's
events meanwhile.

Tests inject faults here with a hook, `module:function` (`child_hook` / `SDBOT_ENGINE_CHILD_HOOK`): it is called
with the worker before the child reports ready, and may return a function that is called with each
`RenderAttempt` right after the "rendering" message, in the worker thread (a fault there is the render's).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from engine.backends.wire import encode_event
from engine.config import EngineConfig
from engine.errors import EngineError, internal_message
from engine.jobs import Finished

log = logging.getLogger("engine.backends.process")


def child_main(config: EngineConfig, conn: Any, hook: str | None) -> None:
    """The child process's entry point (spawned): serve the engine until told to close or the bot goes away."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s engine-child: %(message)s")
    try:
        asyncio.run(_serve(config, conn, hook))
    finally:
        conn.close()


async def _serve(config: EngineConfig, conn: Any, hook: str | None) -> None:
    from engine.backends.worker import Worker

    lock = threading.Lock()

    def post(message: tuple) -> None:
        with lock:
            conn.send(message)

    faults: list[Callable[[Any], None]] = []

    def announce(attempt) -> None:  # in the worker thread, before the engine is entered: see the module doc
        post(("rendering", attempt.job_ids))
        for fault in faults:
            fault(attempt)

    worker = Worker(config, order="given", on_render=announce)
    if hook:
        module, _, name = hook.partition(":")
        fault = getattr(importlib.import_module(module), name)(worker)
        if fault is not None:
            faults.append(fault)
    worker.start()
    started = time.monotonic()
    try:  # the default checkpoint and its VAE now, so the first job does not wait for them (models are reloaded
        name = await worker.call(lambda engine: engine.models.preload())  # in every new child)
        log.info("default checkpoint %s loaded in %.1f s", name, time.monotonic() - started)
    except Exception as exc:  # the jobs will report it
        log.warning("could not preload the default model: %s", exc)
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()

    def read() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the bot is gone: stop
                message = ("close",)
            loop.call_soon_threadsafe(inbox.put_nowait, message)
            if message[0] == "close":
                return

    outbox: list[tuple[str, tuple]] = []

    def flush() -> None:
        batch = outbox[:]
        outbox.clear()
        post(("events", batch))

    def send(attempt_id: str, wire: tuple) -> None:
        """Events made in the same loop turn (the worker wakes the loop once per burst) cross in one message."""
        if not outbox:
            loop.call_soon(flush)
        outbox.append((attempt_id, wire))

    async def pump(attempt_id: str, handle) -> None:
        async for event in handle:
            wire = await asyncio.to_thread(encode_event, event) if isinstance(event, Finished) else encode_event(event)
            if wire is not None:
                send(attempt_id, wire)

    post(("ready", os.getpid()))
    threading.Thread(target=read, name="sdbot-engine-pipe", daemon=True).start()
    pumps: set[asyncio.Task] = set()
    while True:
        message = await inbox.get()
        if message[0] == "batch":
            jobs = message[1]
            try:
                handles = worker.submit_batch(jobs)
            except EngineError as exc:
                handles = [str(exc)] * len(jobs)
            except Exception as exc:
                handles = [internal_message(exc)] * len(jobs)
            for (attempt_id, _), handle in zip(jobs, handles):
                if isinstance(handle, str):
                    send(attempt_id, ("failed", handle))
                    continue
                task = loop.create_task(pump(attempt_id, handle))
                pumps.add(task)
                task.add_done_callback(pumps.discard)
        elif message[0] == "cancel":
            worker.cancel(message[1])
        elif message[0] == "close":
            break
    await worker.close(cancel_running=True)
    if pumps:
        await asyncio.wait(pumps, timeout=5)
    log.info("engine child stopping after %.0f s", time.monotonic() - started)
