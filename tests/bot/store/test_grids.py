"""Grids in the store: a grid's own job and its cells' jobs; the job queries see a grid as one job (member cap,
job lists), its cells as what the queue holds (server cap), and leave both to the grid service at a restart."""

from __future__ import annotations

from bot.store import grids, jobs
from bot.store.models import JobStatus
from engine.request import GenerationRequest

S = JobStatus
ALICE, GUILD = 111, 5
AXES = {"x": {"type": "Steps", "text": "1, 2, 3", "values": [1, 2, 3], "lora": ""}}


async def _grid(sessions, cells: int = 3):
    async with sessions.begin() as s:
        own = await jobs.create(s, user_id=ALICE, guild_id=GUILD, request=GenerationRequest(prompt="a cat", seed=3))
        members = [
            await jobs.create(s, user_id=ALICE, guild_id=GUILD, request=GenerationRequest(prompt="a cat", steps=i + 1))
            for i in range(cells)
        ]
        grid = await grids.create(s, job=own, axes=AXES, cells=members)
        return grid.id, own.id, [m.id for m in members]


async def test_a_grid_holds_its_job_and_cells_in_order(any_sessions):
    grid_id, own, cells = await _grid(any_sessions)
    async with any_sessions.begin() as s:
        rows = await grids.get(s, grid_id)
        assert rows.grid.axes == AXES and rows.job.id == own
        assert [c.id for c in rows.cells] == cells and [c.request["steps"] for c in rows.cells] == [1, 2, 3]
        assert await grids.of_job(s, own) == (grid_id, None)
        assert await grids.of_job(s, cells[2]) == (grid_id, 2)
        plain = await jobs.create(s, user_id=ALICE, request=GenerationRequest(prompt="x"))
        assert await grids.of_job(s, plain.id) is None


async def test_the_member_cap_counts_a_grid_once_and_the_server_cap_its_cells(any_sessions):
    await _grid(any_sessions, cells=4)
    async with any_sessions.begin() as s:
        await jobs.create(s, user_id=ALICE, guild_id=GUILD, request=GenerationRequest(prompt="x"))
        assert await jobs.count_active(s, ALICE) == 2  # the grid and the other job
        assert await jobs.count_active(s, ALICE, guild_id=GUILD) == 2
        assert await jobs.count_active_in_guild(s, GUILD) == 5  # four cells and the other job
        listed = await jobs.list_for_user(s, ALICE)
        assert len(listed) == 2


async def test_grids_and_cells_are_left_to_the_grid_service_at_a_restart(any_sessions):
    grid_id, own, cells = await _grid(any_sessions)
    async with any_sessions.begin() as s:
        other = await jobs.create(s, user_id=ALICE, request=GenerationRequest(prompt="x"))
        await jobs.transition(s, cells[0], S.RUNNING)
        unfinished = await jobs.unfinished(s)
        assert [j.id for j in unfinished.rerun] == [other.id] and unfinished.to_post == []
        assert await grids.open_grids(s) == [grid_id]
        await jobs.transition(s, own, S.CANCELLED)
        assert await grids.open_grids(s) == []


async def test_deleting_a_grid_job_deletes_the_grid(any_sessions):
    grid_id, own, cells = await _grid(any_sessions)
    async with any_sessions.begin() as s:
        job = await jobs.get(s, own)
        await s.delete(job)
    async with any_sessions.begin() as s:
        assert await grids.open_grids(s) == []
        assert await grids.of_job(s, cells[0]) is None
