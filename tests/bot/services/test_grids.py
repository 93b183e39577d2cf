"""X/Y/Z grids through the services (real store, scripted engine): one submission makes the grid's job and its cells'
jobs; the cells reach the queue a batch at a time within the member's cap; progress counts cells; the grid is
composed and posted exactly once; a failed cell is black, a cancelled one cancels the grid; caps and refusals come
before anything is stored; a restart in the middle resumes the grid and posts it once."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from PIL import Image

from bot.errors import UserError
from bot.services.posting import PostUnavailable
from bot.services.submission import Command, Requester
from bot.store import grids as grid_store
from bot.store import guilds as guild_store
from bot.store import jobs as job_store
from bot.store.db import transaction
from bot.store.models import ModerationMode
from engine import jobs as w
from engine.infotext import parse_infotext, read_png_infotext
from tests.bot.services.fakes import Listener, Posts, ScriptedBackend, make_services

GUILD, CHANNEL = 900, 902
ALICE, BOB = 111, 112


class GridListener(Listener):
    """A grid's Discord side: a job's, plus the cells' progress."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.progress: list[tuple[int, int]] = []

    async def cells(self, job_id: int, done: int, total: int) -> None:
        self.progress.append((done, total))


@pytest.fixture
async def world(engine, sessions, tmp_path: Path):
    backend = ScriptedBackend()
    services = make_services(engine, sessions, tmp_path, backend, moderation={"max_grid_cells": 12})
    await services.bans.load()
    yield services, backend
    services.journal.close()


def command(user: int = ALICE, prompt: str = "a cat in a hat", **options) -> Command:
    options = {"prompt": prompt, "width": 64, "height": 64, "steps": 2, "seed": 5, **options}
    return Command(Requester(user, GUILD, CHANNEL), options)


async def submit(services, *axes: str | None, listener: GridListener | None = None, **options):
    listener = listener or GridListener()
    texts = (list(axes) + [None, None])[:3]
    job = await services.submissions.submit_grid(command(**options), texts, lambda: listener)
    return job, listener


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def rows(services, job_id: int) -> grid_store.GridRows:
    found = await transaction(services.sessions, grid_store.of_job, job_id)
    assert found is not None
    return await transaction(services.sessions, grid_store.get, found[0])


def render_all_waiting(backend: ScriptedBackend) -> list[str]:
    """Start and finish every cell waiting in the queue now; their ids."""
    ids = [p.job_id for p in backend.queued()]
    for job_id in ids:
        backend.render(int(job_id), backend.requests[job_id])
    return ids


async def finish_grid(backend: ScriptedBackend, listener: GridListener) -> None:
    for _ in range(50):
        if listener.posts or any(c.startswith("failed") for c in listener.calls):
            return
        render_all_waiting(backend)
        await settle()
    raise AssertionError("the grid did not finish")


async def test_a_grid_is_its_job_and_a_job_per_cell_fed_a_batch_at_a_time(world):
    services, backend = world
    job, listener = await submit(services, "Steps: 1, 2, 3", "CFG Scale: 5, 7")
    grid = await rows(services, job.id)
    assert grid.job.id == job.id and len(grid.cells) == 6
    assert [c.request["steps"] for c in grid.cells] == [1, 2, 3, 1, 2, 3]
    assert [c.request["cfg_scale"] for c in grid.cells] == [5.0, 5.0, 5.0, 7.0, 7.0, 7.0]
    assert {c.request["seed"] for c in grid.cells} == {5}
    assert job.id not in [int(i) for i in backend.ids]  # the grid's own job never reaches the engine
    # a batch's worth waits in the queue (max_batch 4), in the script's order (Z, then Y, then X outermost)
    assert backend.ids == [str(c.id) for c in grid.cells[:4]]
    assert not any(priority for _, priority in backend.submitted)
    backend.render(grid.cells[0].id, backend.requests[str(grid.cells[0].id)])
    await wait_for(lambda: len(backend.ids) == 5)  # one started: the next is handed to the queue
    await wait_for(lambda: listener.progress[-1] == (1, 6))
    await finish_grid(backend, listener)
    assert listener.posts == [job.id]
    assert [p for p in listener.progress if p[0] == 6] == [(6, 6)]
    async with services.sessions.begin() as s:
        own = await job_store.get(s, job.id)
        cells = [await job_store.get(s, c.id) for c in grid.cells]
    assert own.status == "posted" and all(c.status == "posted" for c in cells)
    png = Path(own.result_paths[0]).read_bytes()
    params = parse_infotext(read_png_infotext(png) or "").params
    assert (params["Script"], params["X Type"], params["Y Values"]) == ("X/Y/Z plot", "Steps", "5, 7")
    # each cell's own first image sits in its slot, a plain job's files and infotext untouched
    assert all(Path(c.result_paths[0]).exists() for c in cells)


async def test_the_member_cap_bounds_what_waits_in_the_queue(world):
    services, backend = world
    for i in range(3):  # three other jobs of the member wait already: the cap is 5
        await services.submissions.submit(command(prompt=f"other {i}"), lambda: Listener())
    job, listener = await submit(services, "Seed: 1-6")
    cells = backend.ids[3:]
    assert len(cells) == 2 and len(backend.queued()) == 5  # two cells fit under the cap
    backend.render(int(cells[0]), backend.requests[cells[0]])  # a cell starts: its place in the queue frees
    await wait_for(lambda: len(backend.ids) == 6)
    assert len(backend.queued()) == 5  # a third cell took it, no more
    for other in backend.ids[:3]:
        backend.render(int(other), backend.requests[other])
    await finish_grid(backend, listener)
    assert listener.posts == [job.id]


async def test_a_failed_cell_is_black_and_a_grid_of_failures_fails(world):
    services, backend = world
    job, listener = await submit(services, "Steps: 1, 2")
    first, second = backend.ids
    backend.emit(int(first), w.Started(job_id=first), w.Failed(job_id=first, message="out of memory"))
    backend.render(int(second), backend.requests[second])
    await wait_for(lambda: bool(listener.posts))
    async with services.sessions.begin() as s:
        own = await job_store.get(s, job.id)
    grid = Image.open(io.BytesIO(Path(own.result_paths[0]).read_bytes())).convert("RGB")
    assert grid.getpixel((2, grid.height - 2)) == (0, 0, 0)  # the failed cell, bottom left
    job2, listener2 = await submit(services, "Steps: 3, 4")
    for cell in backend.ids[2:]:
        backend.emit(int(cell), w.Started(job_id=cell), w.Failed(job_id=cell, message="out of memory"))
    await wait_for(lambda: any(c.startswith("failed") for c in listener2.calls))
    assert "failed: out of memory" in listener2.calls and listener2.posts == []


async def test_cancelling_a_cell_cancels_the_grid(world):
    services, backend = world
    job, listener = await submit(services, "Seed: 1-6")
    assert services.jobs.cancel(int(backend.ids[1]))
    await wait_for(lambda: "cancelled" in listener.calls)
    await settle()
    async with services.sessions.begin() as s:
        grid = await grid_store.get(s, (await grid_store.of_job(s, job.id))[0])
    assert grid.job.status == "cancelled" and {c.status for c in grid.cells} == {"cancelled"}
    assert listener.posts == [] and len(backend.ids) == 4  # nothing more went to the queue


async def test_cancelling_the_grid_by_its_job(world):
    services, backend = world
    job, listener = await submit(services, "Seed: 1-3")
    assert await services.grids.cancel(job.id)
    await wait_for(lambda: "cancelled" in listener.calls)
    assert not await services.grids.cancel(job.id)


@pytest.mark.parametrize(
    ("axes", "options", "message"),
    [
        (("Seed: 1-13",), {}, "this grid has 13 cells (13); the most this bot renders in one grid is 12"),
        (("Steps: 1, 90",), {}, "the cell Steps: 90: this server allows at most 50 steps"),
        (("Checkpoint name: a, b",), {}, "the cell b: this server allows only these models: a"),
        (("Prompt S/R: dog, fox",), {}, "Prompt S/R did not find dog in prompt or negative prompt."),
        (("Steps: 1", "Sampler: Euler, nope"), {}, "unknown sampler 'nope'"),
    ],
)
async def test_refusals_leave_nothing(world, axes, options, message):
    services, backend = world
    await transaction(services.sessions, guild_store.update, GUILD, max_steps=50, allowed_models=["a"])
    with pytest.raises(Exception) as err:
        await submit(services, *axes, **options)
    assert message in str(err.value)
    async with services.sessions.begin() as s:
        assert await job_store.list_for_user(s, ALICE) == []
    assert backend.ids == []


async def test_a_grid_is_one_of_the_members_jobs_and_its_cells_count_for_the_server(world, tmp_path):
    services, backend = world
    for i in range(4):
        await services.submissions.submit(command(prompt=f"other {i}"), lambda: Listener())
    await submit(services, "Seed: 1-8")  # the member's fifth job: allowed
    with pytest.raises(UserError, match="you have 5"):
        await submit(services, "Seed: 1-2")


async def test_the_server_queue_cap_counts_cells(engine, sessions, tmp_path):
    services = make_services(engine, sessions, tmp_path, moderation={"max_queued_per_guild": 6})
    await submit(services, "Seed: 1-4")
    with pytest.raises(UserError, match="this server has 4 jobs waiting and the grid has 3 cells"):
        await submit(services, "Seed: 1-3", listener=GridListener())
    services.journal.close()


async def test_a_server_reviewing_prompts_refuses_grids(world):
    services, _ = world
    await transaction(services.sessions, guild_store.update, GUILD, moderation_mode=ModerationMode.PROMPTS)
    with pytest.raises(UserError, match="a grid cannot wait for review"):
        await submit(services, "Seed: 1-2")


async def test_a_restart_in_the_middle_resumes_the_grid_and_posts_it_once(engine, sessions, tmp_path):
    backend = ScriptedBackend()
    first = make_services(engine, sessions, tmp_path, backend)
    job, listener = await submit(first, "Steps: 1, 2, 3", "Seed: 7, 8")
    grid = await rows(first, job.id)
    done_cell, running_cell = grid.cells[0], grid.cells[1]
    backend.render(done_cell.id, backend.requests[str(done_cell.id)])
    backend.emit(running_cell.id, w.Started(job_id=str(running_cell.id)))
    await wait_for(lambda: listener.progress[-1] == (1, 6))
    first.grids.shutdown()
    first.journal.close()  # the process dies here: one cell delivered, one running, four queued

    again = ScriptedBackend()
    recovered: list[GridListener] = []

    def grid_listener(job):
        recovered.append(GridListener())
        return recovered[-1]

    second = make_services(engine, sessions, tmp_path, again)
    second.grids.listener_for = grid_listener
    assert await second.grids.recover() == 1
    assert await second.jobs.recover() == (0, 0)  # the grid's jobs are the grid service's
    assert str(done_cell.id) not in again.ids and not any(priority for _, priority in again.submitted)
    assert again.ids[0] == str(running_cell.id)  # the interrupted cell runs again, first
    (resumed,) = recovered
    await finish_grid(again, resumed)
    assert resumed.posts == [job.id] and listener.posts == []
    # a third start finds nothing to do and posts nothing
    third = make_services(engine, sessions, tmp_path, ScriptedBackend())
    third.grids.listener_for = grid_listener
    assert await third.grids.recover() == 0 and len(recovered) == 1
    for services in (second, third):
        services.journal.close()


async def test_a_grid_composed_but_not_posted_is_posted_once_after_a_restart(engine, sessions, tmp_path):
    backend, discord = ScriptedBackend(), Posts()
    first = make_services(engine, sessions, tmp_path, backend, posts=discord)
    lost = GridListener(fail_posts=[PostUnavailable("reset")], board=discord)
    lost.lost_post = True  # the post reached the channel; its answer did not
    job, _ = await submit(first, "Seed: 1-2", listener=lost)
    first.jobs.posts.retry_s = 0.0  # give up at once: the grid stays `done`
    render_all_waiting(backend)
    await wait_for(lambda: bool(lost.posts))
    await settle()
    async with first.sessions.begin() as s:
        assert (await job_store.get(s, job.id)).status == "done"
    first.journal.close()

    second = make_services(engine, sessions, tmp_path, ScriptedBackend(), posts=discord)
    again = GridListener(board=discord)
    second.grids.listener_for = lambda job: again
    assert await second.grids.recover() == 1
    async with asyncio.timeout(5):
        while not await _posted(second, job.id):
            await asyncio.sleep(0.01)
    assert again.posts == [] and lost.posts == [job.id]  # the repeat, with the same nonce, was not a new post
    async with second.sessions.begin() as s:
        assert (await job_store.get(s, job.id)).message_id == 4242
    second.journal.close()


async def _posted(services, job_id: int) -> bool:
    async with services.sessions.begin() as s:
        return (await job_store.get(s, job_id)).status == "posted"
