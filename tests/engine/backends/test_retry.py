"""The thread worker's retry policy (engine/backends/retry.py), driven by a scripted runner: no engine, exact decisions.

tests/engine/backends/test_worker.py shows the same policy on the real engine (OOM in a batch of four, a job's images in
halves, one bad job in a batch); here every branch is played out call by call.
"""

from __future__ import annotations

import torch

from engine.backends.retry import OOM_MESSAGE, RetryPolicy, is_out_of_memory
from engine.backends.worker_state import WorkerStats
from engine.errors import EngineError
from engine.render.pipeline import RenderedImage, RenderResult
from engine.request import GenerationRequest


class Job:
    def __init__(self, name: str, batch_size: int = 1) -> None:
        self.id = name
        self.request = GenerationRequest(name, seed=10, batch_size=batch_size, width=64, height=64)
        self.state = "running"


class Script:
    """A runner whose attempts answer from a script: f(job ids, requests) -> (status, value)."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.calls: list[tuple[tuple[str, ...], tuple[tuple[int, int], ...], bool]] = []
        self.ends: dict[str, tuple[str, object]] = {}
        self.freed = 0

    def attempt(self, jobs, requests, retry):
        self.calls.append((tuple(j.id for j in jobs), tuple((r.seed, r.batch_size) for r in requests), retry))
        return self.answer([j.id for j in jobs], requests)

    def deliver(self, job, result) -> None:
        self._end(job, "finished", result)

    def report_cancelled(self, jobs) -> None:
        for job in jobs:
            self._end(job, "cancelled", None)

    def fail(self, jobs, message) -> None:
        for job in jobs:
            self._end(job, "failed", message)

    def free_memory(self) -> None:
        self.freed += 1

    def _end(self, job, kind, value) -> None:
        assert job.id not in self.ends, f"{job.id} ended twice"
        job.state = "done"
        self.ends[job.id] = (kind, value)


def results(requests) -> list[RenderResult]:
    return [
        RenderResult(r, [RenderedImage(None, r.seed + i, "", {}) for i in range(r.batch_size)], "m", None, 1.0)
        for r in requests
    ]


def test_a_batch_that_runs_out_of_memory_is_split_in_halves_once():
    runner = Script(lambda ids, requests: ("oom", None) if len(ids) == 4 else ("ok", results(requests)))
    stats = WorkerStats()
    RetryPolicy(runner, stats).render([Job(n) for n in "abcd"])
    assert [c[0] for c in runner.calls] == [("a", "b", "c", "d"), ("a", "b"), ("c", "d")]
    assert [c[2] for c in runner.calls] == [False, True, True]
    assert {k for k, _ in runner.ends.values()} == {"finished"} and runner.freed == 1 and stats.oom_retries == 1


def test_one_job_out_of_memory_renders_its_images_in_two_halves_with_their_seeds():
    runner = Script(lambda ids, requests: ("oom", None) if requests[0].batch_size == 4 else ("ok", results(requests)))
    RetryPolicy(runner, WorkerStats()).render([Job("a", batch_size=4)])
    assert [c[1] for c in runner.calls] == [((10, 4),), ((10, 2),), ((12, 2),)]  # image i keeps seed + i
    kind, merged = runner.ends["a"]
    assert kind == "finished" and [i.seed for i in merged.images] == [10, 11, 12, 13]
    assert merged.request.batch_size == 4 and "two halves" in merged.notes[-1]


def test_out_of_memory_twice_fails_readably():
    runner = Script(lambda ids, requests: ("oom", None))
    RetryPolicy(runner, WorkerStats()).render([Job("a")])
    assert runner.ends == {"a": ("failed", OOM_MESSAGE)} and len(runner.calls) == 2


def test_a_failed_batch_is_rerun_job_by_job_so_only_the_bad_job_fails():
    def answer(ids, requests):
        return ("error", "bad prompt") if "bad" in ids else ("ok", results(requests))

    stats = WorkerStats()
    runner = Script(answer)
    RetryPolicy(runner, stats).render([Job("a"), Job("bad"), Job("c")])
    assert runner.ends["bad"] == ("failed", "bad prompt")
    assert runner.ends["a"][0] == runner.ends["c"][0] == "finished" and stats.isolated_retries == 1


def test_a_cancelled_call_reports_its_live_jobs_cancelled():
    runner = Script(lambda ids, requests: ("cancelled", None))
    RetryPolicy(runner, WorkerStats()).render([Job("a"), Job("b")])
    assert runner.ends == {"a": ("cancelled", None), "b": ("cancelled", None)} and len(runner.calls) == 1


def test_out_of_memory_detection():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(EngineError("unknown VAE"))
