"""The local engine in a child process (`[engine] isolation = "process"`, the default).

A segfault in a native library, a CUDA error that poisons the context ("restart required", as WebUI users know
it) or the kernel's OOM killer would take the whole bot down with an engine thread: Discord connection, queue
and all. `ProcessWorker` keeps the queue in the bot and renders in a child process that holds the models; when
the child dies, the bot notices at once (its end of the pipe closes), starts a new child (which loads the models
again) and runs the job that was on it once more; if the child dies on that job again, the job fails with
"the image engine crashed twice on this job". The queue, the job handles and the Discord connection never
notice anything but a delay.

Its bot side is the Ray backend's (`engine.backends.dispatch.DispatchWorker`: the fair queue, `Queued(position)`,
dispatch with back-pressure, retries of a lost attempt, events decoded from small wire tuples) with one local child as
its only replica, so the two backends cannot drift apart. What differs:

* The child is started with multiprocessing's `spawn` method (a fresh interpreter: forking a process that has
  torch, CUDA or threads is unsafe) and runs an `engine.backends.worker.Worker` in given order
  (engine/backends/child.py): ("batch", [(attempt, request), ...]) and ("cancel", attempt) come in,
  ("events", [(attempt, wire tuple), ...]) go out, one message per burst of events. Results cross as their PNG
  bytes, previews as small PIL images.
* The bot chooses the batches (engine/backends/dispatch.py); the child renders them as given, in the order
  given. At most two batches (`2 * limits.max_batch` jobs) are in the child at once: one rendering, the next
  waiting there, so the engine starts it the moment a render ends (no round trip through the bot, which may be
  busy encoding or posting the previous images). The rest wait here, where fairness and cancellation are cheap;
  a job that comes later (another server's, a moderator's re-run) waits at most for those two batches. Just
  before each render the child tells the bot which jobs it renders, synchronously (from the worker thread,
  before the engine is entered), so a crash is charged to the jobs that were on the engine, even when it comes
  at the render's first instruction; the others in the child just run again. A job whose child
  died under it while it waited `UNCHARGED_LOSSES` times (say a checkpoint whose load crashes) fails too.
* A child that exits while idle is restarted too, so the next job does not wait for it; a child that cannot
  start (or dies before it is ready) `CHILD_START_ATTEMPTS` times in a row fails the waiting jobs with the reason.
* The child exits by itself when the bot dies (its end of the pipe reads EOF): no orphan holds the GPU.

The process boundary costs a few milliseconds per job (pickling the request, the PNG bytes back, one context
switch per event): `benchmarks/engine_bench.py` measures it against the in-process worker.

Tests inject faults into the child with a hook, `module:function` (the `child_hook` argument or the environment
variable `SDBOT_ENGINE_CHILD_HOOK`): see engine/backends/child.py.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from typing import Any

from engine.backends.child import child_main
from engine.backends.dispatch import DispatchedJob, DispatchWorker, Outcome, ReplicaInfo
from engine.config import EngineConfig
from engine.errors import EngineError
from engine.jobs import SHUTDOWN_RUNNING, Cancelled, Failed

log = logging.getLogger(__name__)

CRASHED_TWICE = "the image engine crashed twice on this job"
KEPT_CRASHING = "the image engine kept crashing before this job could run"
UNCHARGED_LOSSES = 3
HOOK_ENV = "SDBOT_ENGINE_CHILD_HOOK"
CHILD_START_TIMEOUT_S = 600.0  # imports, CUDA init and the default checkpoint's load
CHILD_START_ATTEMPTS = 3
STOP_TIMEOUT_S = 10.0


class _Child:
    """One engine child: the process, the bot's end of its pipe, and the thread reading that end."""

    def __init__(self, generation: int, process: Any, conn: Any, ready: asyncio.Future) -> None:
        self.generation = generation
        self.process = process
        self.conn = conn
        self.ready = ready  # set on the loop when the child says it is ready (its models loaded)
        self.gone = False
        self._send_lock = threading.Lock()

    @property
    def usable(self) -> bool:
        return not self.gone and self.ready.done() and self.ready.exception() is None

    def send(self, message: tuple) -> bool:
        """False when the child is gone (its death is reported by the reader thread)."""
        try:
            with self._send_lock:
                self.conn.send(message)
            return True
        except (OSError, EOFError, BrokenPipeError):
            return False


class _Stream:
    """What `DispatchWorker.cancel` calls on a dispatched job: ask the child to cancel that attempt."""

    def __init__(self, child: _Child, attempt_id: str) -> None:
        self.child, self.attempt_id = child, attempt_id

    def cancel(self) -> None:
        self.child.send(("cancel", self.attempt_id))


class ProcessWorker(DispatchWorker):
    """The worker interface (start, submit, cancel, position, close) with the engine in a child process."""

    def __init__(self, config: EngineConfig | None = None, *, child_hook: str | None = None) -> None:
        super().__init__(config or EngineConfig())
        self.child_hook = child_hook if child_hook is not None else os.environ.get(HOOK_ENV) or None
        self.restarts = 0  # children started after the first (tests, logs)
        self._child: _Child | None = None
        self._generation = 0
        self._attempts: dict[str, tuple[int, asyncio.Queue]] = {}
        self._starting: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting_losses: dict[str, int] = {}  # job id -> times its child died while the job waited in it

    # -- what differs from the Ray backend (engine.backends.dispatch) --------------------------------------------------

    @property
    def capacity(self) -> int:
        """Jobs in the child at once: the batch it renders and the next one, ready (see the module doc)."""
        return 2 * max(1, self.config.limits.max_batch)

    @property
    def max_batches(self) -> int:
        return 2

    @property
    def max_retries(self) -> int:
        return 1

    def lost_message(self, attempts: int) -> str:
        return CRASHED_TWICE

    @property
    def child_pid(self) -> int | None:
        """The live child's process id (None while none is up)."""
        child = self._child
        return child.process.pid if child is not None and not child.gone and child.ready.done() else None

    async def _connect(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            await self._live_child()
        except EngineError as exc:
            self._error = str(exc)
            log.error("%s", self._error)
            raise
        log.info("image engine child ready (pid %s)", self.child_pid)

    def _teardown(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        child.send(("close",))
        child.process.join(STOP_TIMEOUT_S)
        if child.process.is_alive():
            log.warning("the image engine child did not stop in %.0f s; killing it", STOP_TIMEOUT_S)
            child.process.kill()
            child.process.join(5)
        child.conn.close()

    async def _attempt(self, jobs: list[DispatchedJob]) -> list[Outcome]:
        """One run of the batch in the child, as one message: per job "done" (it ended) or "lost" (the child
        died under it)."""
        try:
            child = await self._live_child()
        except EngineError as exc:
            for job in jobs:
                self._done(job, Failed(job_id=job.id, message=str(exc)))
            return ["done"] * len(jobs)
        inboxes = []
        for job in jobs:
            job.attempts += 1
            attempt_id = f"{job.id}#{job.attempts}"
            inbox: asyncio.Queue = asyncio.Queue()
            self._attempts[attempt_id] = (child.generation, inbox)
            job.stream = _Stream(child, attempt_id)
            job.replica = ReplicaInfo(f"child-{child.generation}", child.process.pid, "local", "127.0.0.1")
            self.stats.dispatched += 1
            inboxes.append((attempt_id, inbox))
        if not child.send(("batch", [(attempt_id, job.request) for job, (attempt_id, _) in zip(jobs, inboxes)])):
            for _, inbox in inboxes:
                inbox.put_nowait(("lost",))
        return list(await asyncio.gather(*(self._follow(job, *entry) for job, entry in zip(jobs, inboxes))))

    async def _follow(self, job: DispatchedJob, attempt_id: str, inbox: asyncio.Queue) -> Outcome:
        """One job's events from the child until it ended ("done") or the child died ("lost")."""
        started = False
        try:
            while True:
                message = await inbox.get()
                if message[0] == "lost":
                    if job.cancel_reason is not None or self._closing:
                        self._done(job, Cancelled(job_id=job.id, reason=job.cancel_reason or SHUTDOWN_RUNNING))
                        return "done"
                    if not started:  # it was waiting in the child: not this job's crash
                        job.attempts -= 1
                        losses = self._waiting_losses[job.id] = self._waiting_losses.get(job.id, 0) + 1
                        if losses >= UNCHARGED_LOSSES:
                            self._done(job, Failed(job_id=job.id, message=KEPT_CRASHING))
                            return "done"
                    else:
                        log.warning(
                            "job %s: the image engine died while rendering it (attempt %d of %d)",
                            job.id,
                            job.attempts,
                            self.max_retries + 1,
                        )
                    return "lost"
                if message[0] == "rendering":  # on the engine now: a crash from here on is this job's
                    started = True
                    continue
                self._on_message(job, message)
                if job.state == "done":
                    return "done"
        finally:
            self._attempts.pop(attempt_id, None)
            job.stream = None
            if job.state == "done":
                self._waiting_losses.pop(job.id, None)

    # -- the child's life -----------------------------------------------------------------------------------

    async def _live_child(self) -> _Child:
        """The running child, starting one (again) when there is none; EngineError when none will start."""
        while True:
            if self._starting is not None and not self._starting.done():
                await asyncio.shield(self._starting)  # raises EngineError when it gave up
                continue
            child = self._child
            if child is not None and child.usable:
                return child
            if self._closing:
                raise EngineError("the image worker is shutting down")
            self._starting = asyncio.get_running_loop().create_task(self._start_child(), name="sdbot-engine-start")

    async def _start_child(self) -> _Child:
        reason = "it did not start"
        for attempt in range(1, CHILD_START_ATTEMPTS + 1):
            if self._closing:
                raise EngineError("the image worker is shutting down")
            child = await asyncio.to_thread(self._spawn, asyncio.get_running_loop().create_future())
            if self._torn_down:  # closed while it was being spawned
                await asyncio.to_thread(self._teardown)
                raise EngineError("the image worker is shutting down")
            try:
                await asyncio.wait_for(asyncio.shield(child.ready), CHILD_START_TIMEOUT_S)
                if self._generation > 1:
                    self.restarts += 1
                    log.warning(
                        "image engine child restarted (pid %s, generation %d)", child.process.pid, child.generation
                    )
                return child
            except TimeoutError:
                reason = f"it did not become ready within {CHILD_START_TIMEOUT_S:g} s"
                child.process.kill()
            except EngineError as exc:
                reason = str(exc)
            log.error(
                "the image engine child could not start (try %d of %d): %s", attempt, CHILD_START_ATTEMPTS, reason
            )
            await asyncio.sleep(min(5.0, 0.5 * 2**attempt))
        raise EngineError(f"the image engine could not be started: {reason}")

    def _spawn(self, ready: asyncio.Future) -> _Child:
        """Start a child (blocking: in a thread) and the thread that reads its pipe."""
        ctx = multiprocessing.get_context("spawn")
        mine, theirs = ctx.Pipe(duplex=True)
        self._generation += 1
        process = ctx.Process(
            target=child_main,
            args=(self.config, theirs, self.child_hook),
            name=f"sdbot-engine-{self._generation}",
            daemon=True,
        )
        process.start()
        theirs.close()  # only the child holds its end now: its death closes the pipe
        child = _Child(self._generation, process, mine, ready)
        self._child = child
        threading.Thread(
            target=self._read, args=(child,), name=f"sdbot-engine-reader-{child.generation}", daemon=True
        ).start()
        return child

    def _read(self, child: _Child) -> None:
        """The reader thread: every message onto the loop; at EOF (the child died or exited), report it gone."""
        while True:
            try:
                message = child.conn.recv()
            except (EOFError, OSError):
                break
            except Exception:  # a message that does not unpickle: drop it, keep reading
                log.exception("unreadable message from the image engine child")
                continue
            self._call(self._on_child, child, message)
        child.process.join(5)
        self._call(self._on_gone, child, child.process.exitcode)

    def _call(self, fn, *args) -> None:
        loop = self._loop
        if loop is None:  # not connected yet: nobody is listening
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    def _on_child(self, child: _Child, message: tuple) -> None:
        kind = message[0]
        if kind == "ready":
            if not child.ready.done():
                child.ready.set_result(None)
        elif kind == "events":
            for attempt_id, wire in message[1]:
                entry = self._attempts.get(attempt_id)
                if entry is not None and entry[0] == child.generation:
                    entry[1].put_nowait(wire)
        elif kind == "rendering":
            for attempt_id in message[1]:
                entry = self._attempts.get(attempt_id)
                if entry is not None and entry[0] == child.generation:
                    entry[1].put_nowait(("rendering",))

    def _on_gone(self, child: _Child, exitcode: int | None) -> None:
        child.gone = True
        if not child.ready.done():
            child.ready.set_exception(EngineError(f"it exited with {_exit_text(exitcode)} while starting"))
            child.ready.exception()  # retrieved: `_start_child` reports it
        for generation, inbox in list(self._attempts.values()):
            if generation == child.generation:
                inbox.put_nowait(("lost",))
        if self._closing or self._torn_down:
            return
        log.error(
            "the image engine child (pid %s) died: %s; starting a new one", child.process.pid, _exit_text(exitcode)
        )
        if self._child is child and (self._starting is None or self._starting.done()):
            # Restart now, not at the next job: models load while nobody waits.
            self._starting = asyncio.get_running_loop().create_task(self._start_child(), name="sdbot-engine-start")
            self._starting.add_done_callback(lambda t: t.cancelled() or t.exception())


def _exit_text(code: int | None) -> str:
    if code is None:
        return "an unknown status"
    if code < 0:
        import signal

        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"
