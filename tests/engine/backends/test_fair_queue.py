"""The queue every backend keeps in the bot (engine/backends/fair_queue.py): order, positions, the cap, cancel, requeue.

No engine and no event loop: the events go to a list, as a backend's `emit` would hand them on.
"""

from __future__ import annotations

import pytest

from engine.backends.fair_queue import FairQueue, QueuedJob
from engine.errors import EngineError
from engine.jobs import (
    SHUTDOWN_QUEUED,
    Cancelled,
    Finished,
    JobHandle,
    Queued,
    QueueFull,
    member_cap_message,
)
from engine.request import GenerationRequest


class Emitted(list):
    def of(self, job_id: str) -> list:
        return [event for job, event in self if job.id == job_id]


def make_queue(cap: int = 0, round_robin: bool = True) -> tuple[FairQueue[QueuedJob], Emitted]:
    emitted = Emitted()
    queue: FairQueue[QueuedJob] = FairQueue(
        round_robin=round_robin,
        cap=cap,
        make=lambda pending, seq: QueuedJob(pending, seq, JobHandle(pending, lambda job_id, reason: False)),
        emit=lambda job, event: emitted.append((job, event)),
    )
    return queue, emitted


def submit(queue, job_id: str, owner: str, group: str | None = "g1", **kw) -> QueuedJob:
    return queue.submit(GenerationRequest(f"prompt {job_id}"), owner=owner, job_id=job_id, group=group, **kw)


def positions(queue) -> dict[str, int | None]:
    return {job_id: queue.position(job_id) for job_id in queue.jobs}


def test_positions_follow_the_round_robin_and_every_change_is_announced():
    queue, emitted = make_queue()
    for job_id, owner, group in [("a1", "a", "g1"), ("a2", "a", "g1"), ("b1", "b", "g1"), ("c1", "c", "g2")]:
        submit(queue, job_id, owner, group)
    # g1 and g2 alternate; inside g1, a and b take turns: a1, c1, b1, a2
    assert [j.id for j in queue.ordered()] == ["a1", "c1", "b1", "a2"]
    assert positions(queue) == {"a1": 1, "a2": 4, "b1": 3, "c1": 2}
    assert [e.position for e in emitted.of("a2")] == [2, 3, 4]  # pushed back by fairer jobs, each time told
    assert all(isinstance(e, Queued) for _, e in emitted)


def test_first_come_first_served_without_round_robin_and_priority_first():
    queue, _ = make_queue(round_robin=False)
    for job_id, owner in [("a1", "a"), ("a2", "a"), ("b1", "b")]:
        submit(queue, job_id, owner)
    submit(queue, "mod", "m", priority=True)
    assert [j.id for j in queue.ordered()] == ["mod", "a1", "a2", "b1"]


def test_the_member_cap_counts_waiting_jobs_only():
    queue, _ = make_queue(cap=2)
    first, _second = submit(queue, "a1", "a"), submit(queue, "a2", "a")
    with pytest.raises(QueueFull) as full:
        submit(queue, "a3", "a")
    assert str(full.value) == member_cap_message(2, 2) == "you have 2 jobs queued; the limit is 2"
    submit(queue, "p", "a", priority=True)  # priority jobs do not count, and are not refused
    submit(queue, "b1", "b")  # another member is not held back
    queue.take([first])  # a started job does not count either
    assert queue.waiting_of("a") == 1
    submit(queue, "a3", "a")
    with pytest.raises(EngineError, match="already queued or running"):
        submit(queue, "a3", "b")


def test_cancel_a_waiting_job_ends_it_and_moves_the_others_up():
    queue, emitted = make_queue(round_robin=False)
    for job_id in ["j1", "j2", "j3"]:
        submit(queue, job_id, "a")
    job = queue.cancel("j1", "cancelled")
    assert job is not None and job.state == "done"
    assert emitted.of("j1")[-1] == Cancelled(job_id="j1", reason="cancelled")
    assert positions(queue) == {"j2": 1, "j3": 2}
    assert queue.cancel("j1", "again") is None and queue.cancel("nope", "x") is None


def test_a_started_job_is_handed_back_to_its_backend_on_cancel_and_ends_once():
    queue, emitted = make_queue()
    job = submit(queue, "j1", "a")
    queue.take([job])
    assert job.state == "running" and job.request.seed is not None  # the seed is fixed for every retry
    assert queue.position("j1") is None and queue.started() == [job]
    assert queue.cancel("j1", "stop") is job and job.cancel_reason == "stop" and job.state == "running"
    assert queue.cancel("j1", "stop") is None  # once
    assert queue.finish(job, Cancelled(job_id="j1", reason="stop"))
    assert not queue.finish(job, Finished(job_id="j1", result=None))  # a job ends once
    assert [e.kind for e in emitted.of("j1")] == ["queued", "cancelled"] and queue.jobs == {}


def test_requeue_puts_a_job_back_at_its_place():
    queue, _ = make_queue(round_robin=False)
    first = submit(queue, "j1", "a")
    submit(queue, "j2", "b")
    queue.take([first], "dispatched")
    assert positions(queue) == {"j1": None, "j2": 1}
    queue.requeue(first)  # refused by the engine: it keeps its arrival
    assert positions(queue) == {"j1": 1, "j2": 2}


def test_close_cancels_the_waiting_jobs_and_returns_them_in_order():
    queue, emitted = make_queue()
    for job_id, owner in [("a1", "a"), ("a2", "a"), ("b1", "b")]:
        submit(queue, job_id, owner)
    running = queue.ordered()[0]
    queue.take([running])
    assert [j.id for j in queue.close()] == ["b1", "a2"]
    assert emitted.of("b1")[-1] == Cancelled(job_id="b1", reason=SHUTDOWN_QUEUED)
    assert len(queue) == 0 and list(queue.jobs) == ["a1"]  # the running job is its backend's to end
