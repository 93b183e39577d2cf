"""The Ray Serve backend (issue 8, `[engine] backend = "ray"`): the bot's worker, rendered by engine replicas.

`RayWorker` is a drop-in for `engine.worker.Worker` as the bot uses it: `start()`, `submit(request, *, owner,
job_id, priority)` returning a `JobHandle` (the same events `Queued`, `Started`, `Step`, `Finished`, `Failed`,
`Cancelled`; awaitable for the result), `cancel(job_id)`, `position(job_id)` and `close()`, all on the event
loop. The replicas (`engine.ray_replica.EngineReplica`) each run a local `Worker`; see docs/scaling.md.

Queue. The waiting jobs stay here, in the bot, in the local worker's order (priority first, then round robin
by server and member, `max_queued_per_user` per owner, `QueueFull` past it), with the same `Queued(position)`
events and `position()`. Ray executes, the bot's database remembers: nothing waits in Ray that the bot does not
also hold.

Dispatch and back-pressure. At most `replicas * max_ongoing_requests` jobs are in Ray at once (the same figure
Serve enforces per replica with `max_ongoing_requests`); the rest wait here, where fairness and cancellation
are cheap. Serve's own queue (`max_queued_requests`, requests not yet on a replica) is capped at that same
figure, so it never holds more than the bot put in flight; a request Serve refuses anyway (`BackPressureError`)
goes back to its place in this queue. A dispatched job has no position (None), like a running one.

Events. Each job is one streaming request; the replica sends ("replica", ...) first, then the job's events as
small tuples (`encode_event`); the images come back as their PNG bytes (decoded lazily here, never re-encoded).
`Started` is reported once and `Step`s only forward (a retried job does not go back to step 1 on screen).

Retries. A replica that dies mid-job (ActorDiedError, ActorUnavailableError, a lost object, a stream that ends
without a result) makes the job run again from the start on another replica, with the same seed (resolved
before the first attempt), at most `max_retries` times, then it fails with a readable message. Each attempt has
its own id on the replica, and events of an abandoned attempt are never read, so a job ends exactly once:
nothing is lost and nothing is reported finished twice.

Connection. `start()` connects in a thread: `address = ""` joins the Ray of this process, else starts a local
one; otherwise it joins the cluster at the address. If the Serve application `app_name` is already running
(deployed by `sdbot worker`), it is used as it is; if not, the bot deploys it and removes it again at `close()`.
`ready()` waits until the replicas are up. Ray is imported only here, lazily: the default install has no Ray.
"""

from __future__ import annotations

import asyncio
import collections
import io
import itertools
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from engine.config import EngineConfig, RayConfig
from engine.errors import EngineError
from engine.pipeline import RenderedImage, RenderResult
from engine.request import GenerationRequest
from engine.worker import (
    CANCELLED, SHUTDOWN_QUEUED, SHUTDOWN_RUNNING, Cancelled, Failed, Finished, JobEvent, JobHandle, PendingJob,
    QueueFull, Queued, Started, Step, WorkerClosed,
)
from engine.fairness import Served, fair_order

log = logging.getLogger(__name__)

DEPLOYMENT = "engine"
TERMINAL = ("finished", "failed", "cancelled")
RAY_MISSING = "the Ray backend needs Ray: pip install 'sdbot[ray]' (or set [engine] backend = \"local\")"
REPLICA_LOST = ("the image worker machine stopped {n} times while rendering this job; "
                "it was not finished, try again later")
BACK_PRESSURE_PAUSE_S = 0.5


# --- wire format (replica -> bot) --------------------------------------------------------------------------

def encode_event(event: JobEvent) -> tuple | None:
    """A worker event as a small picklable tuple; None for `Queued` (positions are the bot's business)."""
    if isinstance(event, Started):
        return ("started", event.batch)
    if isinstance(event, Step):
        return ("step", event.step, event.total, event.preview)
    if isinstance(event, Finished):
        return ("finished", encode_result(event.result))
    if isinstance(event, Failed):
        return ("failed", event.message)
    if isinstance(event, Cancelled):
        return ("cancelled", event.reason)
    return None


def encode_result(result: RenderResult) -> dict:
    """A result with its images as their PNG bytes (already encoded by the worker thread): no raw pixels, and
    not the start image the job carried in (the bot has it)."""
    return dict(request=result.request.replace(init_image_data=b""), model=result.model, vae=result.vae,
                seconds=result.seconds, notes=result.notes,
                images=[(image.png(), image.seed, image.infotext, image.scores) for image in result.images])


def decode_result(data: dict) -> RenderResult:
    images = []
    for png, seed, infotext, scores in data["images"]:
        image = RenderedImage(Image.open(io.BytesIO(png)), seed, infotext, scores)  # decoded on first pixel access
        image.__dict__["png_data"] = png  # the cached PNG: the very bytes the replica made
        images.append(image)
    return RenderResult(request=data["request"], images=images, model=data["model"], vae=data["vae"],
                        seconds=data["seconds"], notes=tuple(data["notes"]))


def failed_message(exc: BaseException) -> str:
    detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
    return f"the image could not be made because of an internal error ({type(exc).__name__}" \
           f"{': ' + detail if detail else ''})"


# --- cluster helpers (blocking; also used by `sdbot worker`) -----------------------------------------------

def import_ray():
    try:
        import ray
        from ray import serve
    except ImportError:
        raise EngineError(RAY_MISSING) from None
    return ray, serve


def connect(address: str) -> bool:
    """Join the Ray cluster at `address` ("": this process's Ray, else a new local one); True if Ray was started
    here (the caller shuts it down)."""
    ray, _ = import_ray()
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
    except Exception as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        hint = (" (a cluster with token authentication, Ray's default, also needs RAY_AUTH_MODE=token and the "
                "head's token in ~/.ray/auth_token or RAY_AUTH_TOKEN here; see docs/scaling.md)") if address else ""
        raise EngineError(f"could not connect to {where}: {str(exc).strip().splitlines()[0]}{hint}") from None
    return not address


def app_status(config: RayConfig) -> Any | None:
    """Serve's status of the application (ApplicationStatusOverview), None if it is not deployed."""
    _, serve = import_ray()
    try:
        return serve.status().applications.get(config.app_name)
    except Exception:  # Serve is not running on this cluster yet
        return None


def deploy(config: EngineConfig) -> None:
    """Deploy (or update) the engine replicas as the Serve application `config.ray.app_name`; blocks until they
    are up. No HTTP proxy: the bot calls them through a deployment handle."""
    _, serve = import_ray()
    from engine.ray_replica import EngineReplica

    r = config.ray
    serve.start(proxy_location="Disabled")
    deployment = serve.deployment(EngineReplica, name=DEPLOYMENT).options(
        num_replicas=r.replicas,
        ray_actor_options={"num_cpus": r.num_cpus, "num_gpus": r.num_gpus},
        max_ongoing_requests=r.max_ongoing_requests,
        max_queued_requests=r.replicas * r.max_ongoing_requests,  # the bot never has more in flight
        graceful_shutdown_timeout_s=max(5.0, min(config.job_timeout_s or 600.0, 600.0)),
        health_check_period_s=5.0,
    )
    try:
        serve.run(deployment.bind(config), name=r.app_name, route_prefix=None)
    except Exception as exc:
        raise EngineError(f"the engine replicas could not start: {str(exc).strip().splitlines()[0]}") from None


def undeploy(config: RayConfig) -> None:
    _, serve = import_ray()
    serve.delete(config.app_name)


def replica_lines(config: RayConfig) -> list[str]:
    """What `sdbot worker --status` prints: the application's state and its replicas by state."""
    status = app_status(config)
    if status is None:
        return [f"application {config.app_name}: not deployed"]
    message = f" ({status.message.strip()})" if status.message.strip() else ""
    lines = [f"application {config.app_name}: {_name(status.status)}{message}"]
    for name, deployment in status.deployments.items():
        states = ", ".join(f"{count} {_name(state)}" for state, count in deployment.replica_states.items())
        lines.append(f"  {name}: {_name(deployment.status)}, replicas: {states or 'none'}")
    return lines


def _name(value: Any) -> str:
    """An enum member's value ("RUNNING"), whatever str() of a str-Enum gives in this Python."""
    return str(getattr(value, "value", value))


# --- the bot side ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReplicaInfo:
    """Where an attempt of a job runs: the Serve replica, its process and its node."""

    replica_id: str
    pid: int
    node_id: str
    node_ip: str


@dataclass
class RayStats:
    """Counters for tests and benchmarks."""

    dispatched: int = 0  # streaming requests sent (retries included)
    retries: int = 0  # attempts re-run after a replica died
    back_pressure: int = 0  # requests Serve refused; put back in the queue
    max_in_flight: int = 0
    jobs_finished: int = 0
    jobs_failed: int = 0
    jobs_cancelled: int = 0
    by_replica: collections.Counter = field(default_factory=collections.Counter)  # finished jobs per replica


class _Lost(Exception):
    """The replica went away without ending the job."""


class _RayJob:
    def __init__(self, pending: PendingJob, seq: int, handle: JobHandle) -> None:
        self.pending = pending
        self.id = pending.job_id
        self.owner = pending.owner
        self.group = pending.group
        self.request = pending.request
        self.priority = pending.priority
        self.seq = seq
        self.position: int | None = None
        self.state = "queued"  # queued | dispatched | done
        self.cancel_reason: str | None = None
        self.attempts = 0
        self.stream: Any = None  # the current attempt's DeploymentResponseGenerator
        self.replica: ReplicaInfo | None = None
        self.started = False
        self.last_step = 0
        self.handle = handle


class RayWorker:
    """The worker interface over Ray Serve replicas; every method is for the event loop. See the module doc."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig(backend="ray")
        self.ray = self.config.ray
        self.stats = RayStats()
        self._queue: list[_RayJob] = []
        self._jobs: dict[str, _RayJob] = {}
        self._tasks: set[asyncio.Task] = set()
        self._seq = itertools.count()
        self._served = Served()
        self._in_flight = 0
        self._closing = False
        self._pause_until = 0.0
        self._wake: asyncio.Event | None = None
        self._connecting: asyncio.Task | None = None
        self._dispatcher: asyncio.Task | None = None
        self._serve_handle: Any = None
        self._owns_ray = False
        self._owns_app = False
        self._error: str | None = None
        self._torn_down = False

    @property
    def capacity(self) -> int:
        """Jobs in Ray at once: every replica's `max_ongoing_requests`."""
        return self.ray.replicas * self.ray.max_ongoing_requests

    @property
    def max_retries(self) -> int:
        """Re-runs of a job whose replica died."""
        return self.ray.max_retries

    def lost_message(self, attempts: int) -> str:
        """What the user reads when the job's last retry died too."""
        return REPLICA_LOST.format(n=attempts)

    # -- loop side ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect (in a thread) and start dispatching; call it on the event loop (`submit` calls it)."""
        if self._dispatcher is not None:
            return
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._connecting = loop.create_task(self._connect(), name="sdbot-ray-connect")
        self._dispatcher = loop.create_task(self._dispatch_loop(), name="sdbot-ray-dispatch")

    async def ready(self) -> None:
        """Wait until the replicas are up; raises EngineError saying what went wrong if they cannot be used."""
        self.start()
        await asyncio.shield(self._connecting)

    async def __aenter__(self) -> "RayWorker":
        self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close(cancel_running=True)

    def submit(self, request: GenerationRequest, *, owner: str | int, job_id: str | None = None,
               priority: bool = False, group: str | int | None = None) -> JobHandle:
        """Queue a job and return its handle at once. Raises QueueFull at the owner's cap, WorkerClosed."""
        if not isinstance(request, GenerationRequest):
            raise TypeError("submit() takes a GenerationRequest")
        self.start()
        if self._closing:
            raise WorkerClosed("the image worker is shutting down; try again in a moment")
        if self._error is not None:
            raise EngineError(self._error)
        job_id = uuid.uuid4().hex if job_id is None else str(job_id)
        owner = str(owner)
        if job_id in self._jobs:
            raise EngineError(f"a job with id {job_id!r} is already queued or running")
        cap = self.config.max_queued_per_user
        if not priority and cap > 0:
            queued = sum(1 for j in self._queue if j.owner == owner and not j.priority)
            if queued >= cap:
                raise QueueFull(f"you have {queued} jobs queued; the limit is {cap}")
        request = request.portable()  # the start image travels with the job: replicas have not the bot's files
        pending = PendingJob(job_id, owner, request, bool(priority), time.time(), None if group is None else str(group))
        job = _RayJob(pending, next(self._seq), JobHandle(self, pending))  # type: ignore[arg-type]
        self._queue.append(job)
        self._jobs[job_id] = job
        self._reposition()
        self._wake.set()
        return job.handle

    def cancel(self, job_id: str, reason: str = CANCELLED) -> bool:
        """Cancel a job: a queued one leaves the queue at once, a dispatched one is cancelled on its replica
        (it stops at its next step). False for an unknown, finished or already cancelled job."""
        job = self._jobs.get(job_id)
        if job is None or job.state == "done" or job.cancel_reason is not None:
            return False
        job.cancel_reason = reason
        if job.state == "queued":
            self._queue.remove(job)
            self._done(job, Cancelled(job_id=job.id, reason=reason))
            self._reposition()
        elif job.stream is not None:
            job.stream.cancel()  # the job's task reports Cancelled when the stream stops
        return True

    def position(self, job_id: str) -> int | None:
        job = self._jobs.get(job_id)
        return job.position if job is not None and job.state == "queued" else None

    def handle(self, job_id: str) -> JobHandle | None:
        job = self._jobs.get(job_id)
        return job.handle if job is not None else None

    def queued(self) -> list[PendingJob]:
        return [j.pending for j in self._ordered()]

    def running(self) -> list[PendingJob]:
        return [j.pending for j in self._jobs.values() if j.state == "dispatched"]

    def where(self, job_id: str) -> ReplicaInfo | None:
        """The replica running the job's current attempt (None while queued, or before the replica answered)."""
        job = self._jobs.get(job_id)
        return job.replica if job is not None else None

    async def close(self, *, cancel_running: bool = False, timeout: float | None = None) -> list[PendingJob]:
        """Stop: cancel and return the jobs not dispatched (in queue order); let the dispatched ones finish
        (`cancel_running`: cancel them; `timeout`: then cancel them); remove what `start()` set up."""
        self._closing = True
        pending = self._ordered()
        self._queue.clear()
        for job in pending:
            job.cancel_reason = SHUTDOWN_QUEUED
            self._done(job, Cancelled(job_id=job.id, reason=SHUTDOWN_QUEUED))
        if cancel_running:
            self._cancel_dispatched(SHUTDOWN_RUNNING)
        if self._tasks:
            _, still = await asyncio.wait(set(self._tasks), timeout=timeout)
            if still:
                self._cancel_dispatched(SHUTDOWN_RUNNING)
                await asyncio.wait(still, timeout=30)
        if self._dispatcher is not None and not self._torn_down:
            self._torn_down = True
            self._wake.set()
            await asyncio.wait([self._dispatcher], timeout=5)
            await asyncio.wait([self._connecting])
            await asyncio.to_thread(self._teardown)
        return [job.pending for job in pending]

    # -- queue helpers --------------------------------------------------------------------------------------

    def _ordered(self) -> list[_RayJob]:
        return fair_order(self._queue, self.config.round_robin, self._served)  # the local worker's order

    def _reposition(self) -> None:
        for index, job in enumerate(self._ordered(), start=1):
            if job.position != index:
                job.position = index
                job.handle._push(Queued(job_id=job.id, position=index))

    def _done(self, job: _RayJob, event: JobEvent) -> None:
        if job.state == "done":
            return
        job.state = "done"
        self._jobs.pop(job.id, None)
        if isinstance(event, Finished):
            self.stats.jobs_finished += 1
            if job.replica is not None:
                self.stats.by_replica[job.replica.replica_id] += 1
        elif isinstance(event, Failed):
            self.stats.jobs_failed += 1
        else:
            self.stats.jobs_cancelled += 1
        job.handle._push(event)

    def _cancel_dispatched(self, reason: str) -> None:
        for job in list(self._jobs.values()):
            if job.state == "dispatched" and job.cancel_reason is None:
                job.cancel_reason = reason
                if job.stream is not None:
                    job.stream.cancel()

    # -- connection -----------------------------------------------------------------------------------------

    async def _connect(self) -> None:
        try:
            await asyncio.wait_for(asyncio.to_thread(self._connect_blocking), self.ray.start_timeout_s)
        except asyncio.TimeoutError:
            self._error = (f"the {self.ray.replicas} engine replica(s) did not start within "
                           f"{self.ray.start_timeout_s:g} s; does the cluster have {self.ray.num_gpus:g} GPU(s) "
                           f"and {self.ray.num_cpus:g} CPU(s) free for each? (`sdbot worker --status`)")
        except EngineError as exc:
            self._error = str(exc)
        except Exception as exc:
            self._error = f"the Ray backend could not start: {failed_message(exc)}"
        if self._error is not None:
            log.error("%s", self._error)
            raise EngineError(self._error)
        log.info("Ray backend ready: application %s, %d replica(s)", self.ray.app_name, self.ray.replicas)

    def _connect_blocking(self) -> None:
        _, serve = import_ray()
        self._owns_ray = connect(self.ray.address)
        status = app_status(self.ray)
        if status is None or _name(status.status) not in ("RUNNING", "DEPLOYING", "UNHEALTHY"):
            log.info("deploying %d engine replica(s) as the Serve application %s", self.ray.replicas,
                     self.ray.app_name)
            self._owns_app = True
            deploy(self.config)
        self._serve_handle = serve.get_app_handle(self.ray.app_name).options(stream=True)

    def _teardown(self) -> None:
        if self._owns_app:
            try:
                undeploy(self.ray)
            except Exception:
                log.warning("could not remove the Serve application %s", self.ray.app_name, exc_info=True)
        if self._owns_ray:
            import ray

            ray.shutdown()

    # -- dispatch -------------------------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        try:
            await self._connecting
        except Exception:
            for job in self._ordered():
                self._queue.remove(job)
                self._done(job, Failed(job_id=job.id, message=self._error or "the Ray backend is not available"))
            return
        while True:
            while not self._closing and not (self._queue and self._in_flight < self.capacity):
                self._wake.clear()
                await self._wake.wait()
            if self._closing:
                return
            pause = self._pause_until - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
                continue
            job = self._ordered()[0]
            self._queue.remove(job)
            job.state = "dispatched"
            job.request = job.request.with_seed()  # every attempt draws the same noise
            self._served.note(job)
            self._reposition()
            self._in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
            task = asyncio.get_running_loop().create_task(self._run(job), name=f"sdbot-ray-job-{job.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, job: _RayJob) -> None:
        """Run a dispatched job to its one terminal event, retrying on another replica when one dies."""
        try:
            while job.state != "done":
                if job.cancel_reason is not None:
                    self._done(job, Cancelled(job_id=job.id, reason=job.cancel_reason))
                    break
                outcome = await self._attempt(job)
                if outcome == "requeue":
                    self._requeue(job)
                    return
                if outcome == "again":  # Serve refused a job already on screen as started: wait, send again
                    await asyncio.sleep(BACK_PRESSURE_PAUSE_S)
                    continue
                if outcome == "lost":
                    if job.attempts > self.max_retries:
                        self._done(job, Failed(job_id=job.id, message=self.lost_message(job.attempts)))
                        break
                    self.stats.retries += 1
                    await asyncio.sleep(min(2.0, 0.25 * 2 ** (job.attempts - 1)))
        except Exception as exc:  # a bug here: fail the job readably, keep serving
            log.exception("Ray job %s", job.id)
            self._done(job, Failed(job_id=job.id, message=failed_message(exc)))
        finally:
            self._in_flight -= 1
            self._wake.set()

    async def _attempt(self, job: _RayJob) -> str:
        """One streaming request: "done" (the job ended), "lost" (the replica went away), "requeue" or "again"
        (Serve's queue was full)."""
        from ray import exceptions as rx
        from ray.serve import exceptions as sx

        job.attempts += 1
        job.replica = None
        payload = dict(job_id=f"{job.id}#{job.attempts}", owner=job.owner, request=job.request,
                       priority=job.priority)
        stream = self._serve_handle.render.remote(payload)
        job.stream = stream
        self.stats.dispatched += 1
        try:
            async for message in stream:
                self._on_message(job, message)
                if job.state == "done":
                    return "done"
            raise _Lost("the replica's stream ended without a result")
        except sx.BackPressureError:
            self.stats.back_pressure += 1
            self._pause_until = time.monotonic() + BACK_PRESSURE_PAUSE_S
            job.attempts -= 1
            return "again" if job.started else "requeue"
        except rx.TaskCancelledError:
            if job.cancel_reason is None:  # Serve cancelled it (a replica shutting down): run it again
                return "lost"
            self._done(job, Cancelled(job_id=job.id, reason=job.cancel_reason))
            return "done"
        except (rx.RayActorError, rx.RaySystemError, rx.ObjectLostError, sx.DeploymentUnavailableError,
                sx.ReplicaUnavailableError, _Lost) as exc:
            where = f" on replica {job.replica.replica_id} (pid {job.replica.pid})" if job.replica else ""
            log.warning("job %s lost its replica%s (attempt %d of %d): %s", job.id, where, job.attempts,
                        self.ray.max_retries + 1, str(exc).strip().splitlines()[0] if str(exc).strip() else
                        type(exc).__name__)
            if job.cancel_reason is not None:
                self._done(job, Cancelled(job_id=job.id, reason=job.cancel_reason))
                return "done"
            return "lost"
        finally:
            job.stream = None

    def _on_message(self, job: _RayJob, message: tuple) -> None:
        kind = message[0]
        if kind == "replica":
            job.replica = ReplicaInfo(*message[1:])
        elif kind == "started":
            if not job.started:
                job.started = True
                job.handle._push(Started(job_id=job.id, batch=message[1]))
        elif kind == "step":
            _, step, total, preview = message
            if step > job.last_step and job.cancel_reason is None:
                job.last_step = step
                job.handle._push(Step(job_id=job.id, step=step, total=total, preview=preview))
        elif kind == "finished":
            if job.cancel_reason is not None:
                self._done(job, Cancelled(job_id=job.id, reason=job.cancel_reason))
            else:
                self._done(job, Finished(job_id=job.id, result=decode_result(message[1])))
        elif kind == "failed":
            self._done(job, Failed(job_id=job.id, message=message[1]))
        elif kind == "cancelled":
            self._done(job, Cancelled(job_id=job.id, reason=job.cancel_reason or message[1]))

    def _requeue(self, job: _RayJob) -> None:
        """Put a job Serve refused back at its place in the queue (it keeps its arrival)."""
        if self._closing or job.cancel_reason is not None:
            self._done(job, Cancelled(job_id=job.id, reason=job.cancel_reason or SHUTDOWN_QUEUED))
            return
        job.state = "queued"
        job.position = None
        self._queue.append(job)
        self._reposition()
