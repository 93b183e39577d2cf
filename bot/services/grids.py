"""X/Y/Z grids from the queue to the channel: feed the cells to the fair queue, follow them, post the grid once.

A grid is its own job (the grid image and the grid's status) and one job per cell (bot/store/grids.py), all
committed by the submission pipeline before `start()`. Each cell is an ordinary job of the fair queue
(`JobService.start`): rendered, saved, checked by the image review where the server reviews images, and batched
with compatible jobs by the worker. The grid hands the queue a few cells at a time (at most `window`, and never past
the member's cap of waiting jobs), in the script's order, so other members' jobs interleave with them as the round
robin says and the member's cap holds. A cell's "post" is its delivery into the grid (`CellListener`): nothing of a
cell reaches Discord. When every cell has ended the grid is composed (bot/services/xyz/compose.py; a failed cell is
black), saved, and posted exactly once through `JobService.post` (its checks against a double post included; the
cells were reviewed already). Cancelling a cell cancels the grid.

Restarts: `recover()` (before `JobService.recover`, which leaves grids alone) puts interrupted cells back in the
queue, delivers cells that were rendered but not delivered, composes a grid whose cells all ended, and posts a
composed grid that was not posted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bot.best_effort import quietly
from bot.errors import UserError
from bot.services.jobs import JobListener, JobService
from bot.services.records import GridRecord, JobRecord, JobStatus, record
from bot.services.xyz.axes import NOTHING
from bot.services.xyz.compose import compose
from bot.services.xyz.plan import GridAxes
from bot.store import grids as grid_store
from bot.store import jobs as job_store
from engine.config import Limits
from engine.request import GenerationRequest

log = logging.getLogger(__name__)

ENDED = {s.value for s in job_store.FINAL} - {JobStatus.POSTED.value}  # a cell that ends without an image
REFEED_S = 0.5  # how soon a grid that could hand the queue nothing (the member's cap was full) tries again


class GridListener(JobListener, Protocol):
    """The Discord side of a grid: a job's, plus the cells' progress."""

    async def cells(self, job_id: int, done: int, total: int) -> None:
        """`done` of `total` cells have ended (`7/12 cells`)."""


@dataclass
class _Run:
    """A grid being rendered: its own job, its axes, the cells not yet handed to the queue (in the script's
    order) and those handed and not ended."""

    grid_id: int
    job: JobRecord
    axes: GridAxes
    listener: GridListener
    pending: list[tuple[JobRecord, GenerationRequest]]
    sent: set[int] = field(default_factory=set)
    ended: set[int] = field(default_factory=set)
    positions: dict[int, int] = field(default_factory=dict)  # waiting cells' places in the queue
    message_id: int | None = None  # the grid's message, once its listener says (stored with the composed grid)
    total: int = 0
    cancelled: bool = False


@dataclass
class GridService:
    jobs: JobService
    listener_for: Callable[[JobRecord], GridListener]  # for grids a previous run left: they report to their channel
    limits: Limits = Limits()
    member_cap: int = 5  # [engine] max_queued_per_user: the queue refuses a member's job past it (0: no cap)
    _runs: dict[int, _Run] = field(default_factory=dict)  # by grid id
    _cells: dict[int, int] = field(default_factory=dict)  # cell job id -> grid id
    _tasks: set[asyncio.Task] = field(default_factory=set)
    _stopping: bool = False

    @property
    def window(self) -> int:
        """How many of a grid's cells may wait in the queue at once: a batch's worth, so compatible cells share
        a call, and few enough that other members' jobs interleave."""
        return max(1, self.limits.max_batch)

    async def start(self, grid_id: int, listener: GridListener) -> None:
        """Feed a grid whose rows are committed (the submission pipeline's)."""
        rows = await self._read(grid_id)
        await self._run(rows, listener)

    def cell_listener(self, job: JobRecord) -> JobListener | None:
        """The listener of a cell of a grid this process follows (None: not such a cell)."""
        grid_id = self._cells.get(job.id)
        run = self._runs.get(grid_id) if grid_id is not None else None
        return CellListener(self, run, job.id) if run is not None else None

    def grid_of(self, job_id: int) -> int | None:
        """The grid a job id belongs to, as its own job or a cell, while this process follows it."""
        if job_id in self._cells:
            return self._cells[job_id]
        return next((g for g, run in self._runs.items() if run.job.id == job_id), None)

    async def cancel(self, job_id: int) -> bool:
        """Cancel the grid that job id (the grid's own job, or a cell) belongs to; False when none is followed."""
        grid_id = self.grid_of(job_id)
        if grid_id is None:
            return False
        await self._cancel(self._runs[grid_id])
        return True

    async def grid_of_job(self, job_id: int) -> GridRecord:
        """The grid whose own job this is: its axes and cells (a user error when the job is not a grid)."""
        found = await self.jobs.write(grid_store.of_job, job_id)
        if found is None or found[1] is not None:
            raise UserError(f"job #{job_id} is not an X/Y/Z grid")
        rows = await self._read(found[0])
        axes = GridAxes.from_data(rows.grid.axes)
        return GridRecord(
            job_id,
            tuple(f"{name}: {a.type.label}: {a.text}" for name, a in zip("XYZ", axes) if a.type is not NOTHING),
            tuple((", ".join(axes.cell_labels(i)), record(JobRecord, c)) for i, c in enumerate(rows.cells)),
        )

    # --- feeding --------------------------------------------------------------------------------------------

    async def _read(self, grid_id: int) -> grid_store.GridRows:
        return await self.jobs.write(grid_store.get, grid_id)

    async def _run(self, rows: grid_store.GridRows, listener: GridListener) -> None:
        axes = GridAxes.from_data(rows.grid.axes)
        cells = [record(JobRecord, c) for c in rows.cells]
        waiting = {c.id for c in cells if c.status == JobStatus.QUEUED.value}
        pending = [
            (cells[i], GenerationRequest(**cells[i].request, limits=self.limits).replace(previews=False))
            for i in axes.render_order()
            if cells[i].id in waiting
        ]
        run = _Run(rows.grid.id, record(JobRecord, rows.job), axes, listener, pending, total=len(cells))
        run.ended = {c.id for c in cells if c.status in ENDED or c.status == JobStatus.POSTED.value}
        self._runs[run.grid_id] = run
        self._cells.update({c.id: run.grid_id for c in cells})
        for cell in cells:
            if cell.status == JobStatus.DONE.value:  # rendered before a restart, not yet delivered
                run.sent.add(cell.id)
                self._spawn(self.jobs.post(cell, CellListener(self, run, cell.id)), f"grid-{run.grid_id}-cell")
        await quietly(listener.cells(run.job.id, len(run.ended), run.total), "grid progress")
        await self._advance(run)

    async def _advance(self, run: _Run) -> None:
        """Hand the queue what fits, or finish the grid when every cell has ended."""
        if run.cancelled:
            return
        if len(run.ended) == run.total:
            await self._complete(run)
            return
        if self._stopping:
            return
        waiting = sum(1 for cell_id in run.sent if self.jobs.worker.position(str(cell_id)) is not None)
        room = self._room(run.job.user_id)
        while run.pending and waiting < self.window and room > 0:
            cell, request = run.pending.pop(0)
            run.sent.add(cell.id)
            try:
                await self.jobs.start(cell, request, CellListener(self, run, cell.id))
            except Exception:
                log.exception("grid %s: cell job %s could not be queued", run.grid_id, cell.id)
                run.sent.discard(cell.id)
                run.ended.add(cell.id)  # recorded failed by JobService.start
                continue
            waiting, room = waiting + 1, room - 1
        if run.pending and not run.sent:  # nothing of this grid will report: look again soon
            asyncio.get_running_loop().call_later(REFEED_S, lambda: self._spawn(self._advance(run), "grid-refeed"))

    def _room(self, user_id: int) -> int:
        """How many more jobs of the member the queue takes before its cap (priority jobs do not count)."""
        if self.member_cap <= 0:
            return self.window
        waiting = sum(1 for p in self.jobs.worker.queued() if p.owner == str(user_id) and not p.priority)
        return self.member_cap - waiting

    # --- what the cells report ------------------------------------------------------------------------------

    async def _cell_started(self, run: _Run) -> None:
        if run.job.status == JobStatus.QUEUED.value:
            job = await self.jobs.write(job_store.transition, run.job.id, JobStatus.RUNNING)
            run.job = record(JobRecord, job)
            await quietly(run.listener.started(run.job.id), "grid progress")
        await self._advance(run)  # a waiting cell left the queue: room for the next

    async def _cell_ended(self, run: _Run, cell_id: int) -> None:
        if cell_id in run.ended:
            return
        run.ended.add(cell_id)
        run.sent.discard(cell_id)
        await quietly(run.listener.cells(run.job.id, len(run.ended), run.total), "grid progress")
        await self._advance(run)

    async def _cell_checked(self, run: _Run, cell_id: int) -> None:
        """After a notice (held for review, rejected): a cell that has ended has ended."""
        job = await self.jobs.get(cell_id)
        if job.status in ENDED:
            await self._cell_ended(run, cell_id)

    # --- the end of a grid ----------------------------------------------------------------------------------

    async def _complete(self, run: _Run) -> None:
        self._forget(run)
        rows = await self._read(run.grid_id)
        job = record(JobRecord, rows.job)
        if job.status == JobStatus.DONE.value:  # composed before a restart: post it
            await self.jobs.post(job, run.listener, check_first=True, review=False)
            return
        cells = [record(JobRecord, c) for c in rows.cells]
        if not any(_delivered(c) for c in cells):
            error = next((c.error for c in cells if c.error), None) or "no cell of the grid could be rendered"
            await self.jobs.write(job_store.transition, job.id, JobStatus.FAILED, error=error)
            await quietly(run.listener.failed(job.id, error), "a grid's failure notice")
            return
        paths = await asyncio.to_thread(self._save, run.axes, job.id, cells)
        done = await self.jobs.write(
            job_store.transition, job.id, JobStatus.DONE, result_paths=paths, message_id=run.message_id
        )
        await self.jobs.post(done, run.listener, review=False)

    def _save(self, axes: GridAxes, job_id: int, cells: list[JobRecord]) -> list[str]:
        """The grid (and each Z value's sub-grid) composed from the delivered cells' first images, saved."""
        pngs = [Path(c.result_paths[0]).read_bytes() if _delivered(c) else None for c in cells]
        images = compose(axes, pngs)
        folder = self.jobs.outputs_dir / str(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, data in enumerate([images.grid, *images.sub_grids], start=1):
            path = folder / f"{job_id}-{i}.png"
            path.write_bytes(data)
            paths.append(str(path))
        return paths

    async def _cancel(self, run: _Run) -> None:
        if run.cancelled:
            return
        run.cancelled = True
        self._forget(run)
        for cell, _ in run.pending:
            await self.jobs.write(job_store.transition, cell.id, JobStatus.CANCELLED)
        run.pending.clear()
        for cell_id in list(run.sent):
            self.jobs.cancel(cell_id)
        job = await self.jobs.get(run.job.id)
        if job.status in (JobStatus.QUEUED.value, JobStatus.RUNNING.value):
            await self.jobs.write(job_store.transition, run.job.id, JobStatus.CANCELLED)
        await quietly(run.listener.cancelled(run.job.id), "a grid's cancel notice")

    def _forget(self, run: _Run) -> None:
        self._runs.pop(run.grid_id, None)
        for cell_id in [c for c, g in self._cells.items() if g == run.grid_id]:
            del self._cells[cell_id]

    # --- restarts and shutdown ------------------------------------------------------------------------------

    async def recover(self, serves: Callable[[int | None], bool] = lambda guild_id: True) -> int:
        """At start-up, before `JobService.recover`: finish every grid a previous run left (of the guilds this
        process serves). Returns how many."""
        found = 0
        for grid_id in await self.jobs.write(grid_store.open_grids):
            rows = await self._read(grid_id)
            if not serves(rows.job.guild_id):
                continue
            for cell in rows.cells:
                if cell.status == JobStatus.RUNNING.value:  # its render died with the last process
                    await self.jobs.write(job_store.transition, cell.id, JobStatus.QUEUED)
            await self._run(await self._read(grid_id), self.listener_for(record(JobRecord, rows.job)))
            found += 1
        return found

    def shutdown(self) -> None:
        """Hand the queue nothing more; cells not handed stay `queued` for the next start."""
        self._stopping = True

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _delivered(cell: JobRecord) -> bool:
    """A cell whose image went into the grid: posted, or done (its delivery is being recorded) with its file."""
    statuses = (JobStatus.POSTED.value, JobStatus.DONE.value)
    return cell.status in statuses and bool(cell.result_paths) and Path(cell.result_paths[0]).exists()


class CellListener:
    """A cell's listener: progress goes to the grid's, and the cell's "post" is its delivery into the grid."""

    def __init__(self, grids: GridService, run: _Run, cell_id: int) -> None:
        self.grids, self.run, self.cell_id = grids, run, cell_id

    async def queued(self, job_id: int, position: int) -> None:
        """The grid's place is its first waiting cell's, until a cell starts."""
        run, positions = self.run, self.run.positions
        best = min(positions.values(), default=None)
        positions[job_id] = position
        if run.job.status == JobStatus.QUEUED.value and min(positions.values()) != best:
            run.message_id = await run.listener.queued(run.job.id, min(positions.values())) or run.message_id

    async def started(self, job_id: int) -> None:
        self.run.positions.pop(job_id, None)
        await self.grids._cell_started(self.run)

    async def step(self, job_id: int, step: int, total: int, preview: Any | None) -> None:
        return None

    async def post(self, job: JobRecord, files: list[Path], nonce: str) -> None:
        # Recorded `posted` by the job service once this returns; the grid counts it now (its files are saved).
        self.grids._spawn(self.grids._cell_ended(self.run, job.id), f"grid-{self.run.grid_id}-delivered")

    async def failed(self, job_id: int, message: str) -> None:
        await self.grids._cell_ended(self.run, job_id)

    async def cancelled(self, job_id: int) -> None:
        await self.grids._cancel(self.run)

    async def interrupted(self, job_id: int) -> None:
        return None  # back in the queue for the next start

    async def notice(self, job_id: int, text: str) -> None:
        await quietly(self.run.listener.notice(self.run.job.id, text), "a cell's notice")
        await self.grids._cell_checked(self.run, job_id)

    async def whisper(self, text: str) -> bool:
        return await self.run.listener.whisper(text)
