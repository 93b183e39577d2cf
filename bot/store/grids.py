"""X/Y/Z grids: a grid is a job of its own (the grid image and the grid's status) plus one job per cell.

The jobs queries (`bot.store.jobs`) see a grid as one job: the member's cap counts the grid's own job and not its
cells, the server's queue cap counts the cells (what the queue holds), `unfinished()` leaves grids and cells to
the grid service (which feeds the cells to the queue a few at a time and posts the grid once), and a member's job
list shows the grid, not its cells. `is_grid_job()` and `is_cell()` are those conditions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.errors import JobNotFound
from bot.store.models import Grid, GridCell, Job, JobStatus, insert

# A grid still to finish at a start: its job is not final yet (cells to render, the grid to compose or post).
OPEN: tuple[JobStatus, ...] = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.DONE)


@dataclass(frozen=True)
class GridRows:
    """A grid with its own job and its cells' jobs in cell order."""

    grid: Grid
    job: Job
    cells: list[Job]


def is_grid_job() -> ColumnElement[bool]:
    """`Job` is the own job of a grid."""
    return exists().where(Grid.job_id == Job.id)


def is_cell() -> ColumnElement[bool]:
    """`Job` is a cell of a grid."""
    return exists().where(GridCell.job_id == Job.id)


async def create(s: AsyncSession, *, job: Job, axes: Mapping[str, Any], cells: Sequence[Job]) -> Grid:
    """A grid for its own (already inserted) job and its cells' jobs, in cell index order."""
    grid = await insert(s, Grid(job_id=job.id, axes=dict(axes)))
    for index, cell in enumerate(cells):
        s.add(GridCell(job_id=cell.id, grid_id=grid.id, cell=index))
    await s.flush()
    return grid


async def get(s: AsyncSession, grid_id: int) -> GridRows:
    grid = await s.get(Grid, grid_id)
    if grid is None:
        raise JobNotFound(f"there is no grid #{grid_id} (it may have been deleted)")
    job = await s.get(Job, grid.job_id, populate_existing=True)
    if job is None:
        raise JobNotFound(f"the job of grid #{grid_id} is gone")
    stmt = (
        select(Job)
        .join(GridCell, GridCell.job_id == Job.id)
        .where(GridCell.grid_id == grid_id)
        .order_by(GridCell.cell)
        .execution_options(populate_existing=True)
    )
    return GridRows(grid, job, list((await s.execute(stmt)).scalars()))


async def of_job(s: AsyncSession, job_id: int) -> tuple[int, int | None] | None:
    """(grid id, cell index) of a cell, (grid id, None) of a grid's own job, None for any other job."""
    own = (await s.execute(select(Grid.id).where(Grid.job_id == job_id))).scalar_one_or_none()
    if own is not None:
        return int(own), None
    cell = (await s.execute(select(GridCell.grid_id, GridCell.cell).where(GridCell.job_id == job_id))).first()
    return None if cell is None else (int(cell[0]), int(cell[1]))


async def open_grids(s: AsyncSession) -> list[int]:
    """The grids a fresh start must finish (their own job queued, running or done), oldest first."""
    stmt = (
        select(Grid.id)
        .join(Job, Job.id == Grid.job_id)
        .where(Job.status.in_([x.value for x in OPEN]))
        .order_by(Grid.id)
    )
    return [int(i) for i in (await s.execute(stmt)).scalars()]
