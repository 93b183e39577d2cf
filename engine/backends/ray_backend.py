"""The Ray Serve backend (`[engine] backend = "ray"`): the bot's worker, rendered by engine replicas.

`RayWorker` is one of the backends of engine/backends/base.py: `start()`, `ready()`, `submit(...)` returning a
`JobHandle`, `cancel`, `position`, `close()`, all on the event loop. Its queue, dispatch, events and retries are
`engine.backends.dispatch.DispatchWorker`'s, shared with the engine child process (see that module); the replicas
(`engine.backends.ray_replica.EngineReplica`) each run a thread `Worker`; see docs/scaling.md. What is Ray's:

Batches. The bot chooses them (engine/backends/dispatch.py) and sends a batch's jobs together, in its order,
without waiting: the gather window is Serve's `@serve.batch` on the replica (`batch_wait_timeout_s` =
`batch_window_ms`), which collects the requests that reach it within the window, so a lone job waits the window
once, not twice; the replica renders what it collected as given (engine/backends/ray_replica.py). With several replicas,
Serve may spread one batch over two of them: both render at once.

Dispatch and back-pressure. At most `replicas * max_ongoing_requests` jobs are in Ray at once (the same figure
Serve enforces per replica with `max_ongoing_requests`). Serve's own queue (`max_queued_requests`, requests not
yet on a replica) is capped at that same figure, so it never holds more than the bot put in flight; a request
Serve refuses anyway (`BackPressureError`) goes back to its place in the bot's queue.

Events. Each job is one streaming request; the replica sends ("replica", ...) first, then the job's events as
wire tuples (engine/backends/wire.py).

Retries. A replica that dies mid-job (ActorDiedError, ActorUnavailableError, a lost object, a stream that ends
without a result) makes the job run again from the start on another replica, at most `max_retries` times.

Connection. `start()` connects in a thread: `address = ""` joins the Ray of this process, else starts a local
one; otherwise it joins the cluster at the address. If the Serve application `app_name` is already running
(deployed by `sdbot worker`), it is used as it is; if not, the bot deploys it and removes it again at `close()`.
`ready()` waits until the replicas are up. Ray is imported only here, lazily: the default install has no Ray.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from engine.backends.dispatch import BACK_PRESSURE_PAUSE_S, DispatchedJob, DispatchWorker, Outcome
from engine.config import EngineConfig, RayConfig
from engine.errors import EngineError, internal_message
from engine.jobs import JobHandle
from engine.request import GenerationRequest

log = logging.getLogger(__name__)

DEPLOYMENT = "engine"
RAY_MISSING = "the Ray backend needs Ray: pip install 'sdbot[ray]' (or set [engine] backend = \"local\")"
REPLICA_LOST = (
    "the image worker machine stopped {n} times while rendering this job; it was not finished, try again later"
)


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
        hint = (
            (
                " (a cluster with token authentication, Ray's default, also needs RAY_AUTH_MODE=token and the "
                "head's token in ~/.ray/auth_token or RAY_AUTH_TOKEN here; see docs/scaling.md)"
            )
            if address
            else ""
        )
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
    from engine.backends.ray_replica import EngineReplica

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


class _Lost(Exception):
    """The replica went away without ending the job."""


class RayWorker(DispatchWorker):
    """The backend over Ray Serve replicas; every method is for the event loop. See the module docstring."""

    gathers = False  # Serve's batcher on the replica waits the window (see the module docstring)

    def __init__(self, config: EngineConfig | None = None) -> None:
        super().__init__(config or EngineConfig(backend="ray"))
        self.ray = self.config.ray
        self._serve_handle: Any = None
        self._owns_ray = False
        self._owns_app = False

    def submit(
        self,
        request: GenerationRequest,
        *,
        owner: str | int,
        job_id: str | None = None,
        priority: bool = False,
        group: str | int | None = None,
    ) -> JobHandle:
        """As every backend's; the start image travels with the job: replicas have not the bot's files."""
        if isinstance(request, GenerationRequest):
            request = request.portable()
        return super().submit(request, owner=owner, job_id=job_id, priority=priority, group=group)

    @property
    def capacity(self) -> int:
        """Jobs in Ray at once: every replica's `max_ongoing_requests`."""
        return self.ray.replicas * self.ray.max_ongoing_requests

    @property
    def max_retries(self) -> int:
        return self.ray.max_retries

    def lost_message(self, attempts: int) -> str:
        return REPLICA_LOST.format(n=attempts)

    # -- connection -----------------------------------------------------------------------------------------

    async def _connect(self) -> None:
        try:
            await asyncio.wait_for(asyncio.to_thread(self._connect_blocking), self.ray.start_timeout_s)
        except TimeoutError:
            self._error = (
                f"the {self.ray.replicas} engine replica(s) did not start within "
                f"{self.ray.start_timeout_s:g} s; does the cluster have {self.ray.num_gpus:g} GPU(s) "
                f"and {self.ray.num_cpus:g} CPU(s) free for each? (`sdbot worker --status`)"
            )
        except EngineError as exc:
            self._error = str(exc)
        except Exception as exc:
            self._error = f"the Ray backend could not start: {internal_message(exc)}"
        if self._error is not None:
            log.error("%s", self._error)
            raise EngineError(self._error)
        log.info("Ray backend ready: application %s, %d replica(s)", self.ray.app_name, self.ray.replicas)

    def _connect_blocking(self) -> None:
        _, serve = import_ray()
        self._owns_ray = connect(self.ray.address)
        status = app_status(self.ray)
        if status is None or _name(status.status) not in ("RUNNING", "DEPLOYING", "UNHEALTHY"):
            log.info("deploying %d engine replica(s) as the Serve application %s", self.ray.replicas, self.ray.app_name)
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

    # -- one attempt ----------------------------------------------------------------------------------------

    async def _attempt(self, jobs: list[DispatchedJob]) -> list[Outcome]:
        """The batch's jobs sent together, in its order, one streaming request each: Serve's batcher
        (`batch_window_ms`) gathers them on a replica, which renders what it gathered as given."""
        return list(await asyncio.gather(*(self._attempt_one(job) for job in jobs)))

    async def _attempt_one(self, job: DispatchedJob) -> Outcome:
        """One streaming request: "done" (the job ended), "lost" (the replica went away), "requeue" or "again"
        (Serve's queue was full)."""
        from ray import exceptions as rx
        from ray.serve import exceptions as sx

        job.attempts += 1
        job.replica = None
        payload = dict(job_id=f"{job.id}#{job.attempts}", owner=job.owner, request=job.request, priority=job.priority)
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
            self._cancelled(job)
            return "done"
        except (
            rx.RayActorError,
            rx.RaySystemError,
            rx.ObjectLostError,
            sx.DeploymentUnavailableError,
            sx.ReplicaUnavailableError,
            _Lost,
        ) as exc:
            where = f" on replica {job.replica.replica_id} (pid {job.replica.pid})" if job.replica else ""
            log.warning(
                "job %s lost its replica%s (attempt %d of %d): %s",
                job.id,
                where,
                job.attempts,
                self.ray.max_retries + 1,
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            )
            if job.cancel_reason is not None:
                self._cancelled(job)
                return "done"
            return "lost"
        finally:
            job.stream = None
