"""A job's handle and the outbox that feeds it from the worker thread (engine/jobs.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from PIL import Image

from engine.errors import EngineError, JobCancelled
from engine.jobs import Cancelled, Failed, JobHandle, Outbox, PendingJob, Queued, Started, Step
from engine.request import GenerationRequest


def handle(job_id: str = "j1", cancels: list | None = None) -> JobHandle:
    def cancel(job_id: str, reason: str) -> bool:
        if cancels is None:
            return False
        cancels.append((job_id, reason))
        return True

    return JobHandle(PendingJob(job_id, "a", GenerationRequest("a cat")), cancel)


async def test_every_iterator_sees_the_whole_history_and_stops_at_the_end():
    h = handle()
    early = asyncio.create_task(_collect(h))
    await asyncio.sleep(0)
    for event in [
        Queued(job_id="j1", position=2),
        Queued(job_id="j1", position=1),
        Started(job_id="j1"),
        Step(job_id="j1", step=1, total=2),
        Failed(job_id="j1", message="no such model"),
    ]:
        h.record(event)
    h.record(Step(job_id="j1", step=2, total=2))  # after the end: dropped
    late = await _collect(h)
    assert await early == late == ["queued", "queued", "started", "step", "failed"]
    assert h.status == "failed" and h.position is None and h.done()
    with pytest.raises(EngineError, match="no such model"):
        await h


async def test_a_waiting_handle_knows_its_position_and_a_cancelled_one_raises():
    cancels: list = []
    h = handle(cancels=cancels)
    with pytest.raises(EngineError, match="not finished"):
        h.result()
    h.record(Queued(job_id="j1", position=3))
    assert h.position == 3 and h.status == "queued"
    assert h.cancel("changed my mind") and cancels == [("j1", "changed my mind")]  # the backend's cancel
    h.record(Cancelled(job_id="j1", reason="changed my mind"))
    with pytest.raises(JobCancelled, match="changed my mind"):
        h.result()


def test_only_the_newest_preview_is_kept():
    h = handle()
    for step in range(1, 4):
        h.record(Step(job_id="j1", step=step, total=3, preview=Image.new("RGB", (8, 8))))
    assert [e.preview is not None for e in h.events] == [False, False, True]


async def test_the_outbox_delivers_in_order_with_one_wake_up_per_burst():
    outbox, h = Outbox(), handle()
    outbox.bind(asyncio.get_running_loop())

    def worker_thread() -> None:
        for step in range(1, 51):
            outbox.put(h, Step(job_id="j1", step=step, total=50))
            outbox.kick()

    thread = threading.Thread(target=worker_thread)
    thread.start()
    thread.join()  # the loop is blocked meanwhile: the whole burst waits behind one wake-up
    assert outbox.wakeups == 1 and h.events == ()
    await asyncio.sleep(0)
    assert [e.step for e in h.events] == list(range(1, 51))
    outbox.put(h, Started(job_id="j1"))
    outbox.kick()  # on the loop thread: delivered at once, no wake-up
    assert h.last_event == Started(job_id="j1") and outbox.wakeups == 1


async def _collect(h: JobHandle) -> list[str]:
    return [event.kind async for event in h]
