"""An X/Y/Z grid's message: the queue position, then `7/12 cells`, then the grid with a menu of its cells.

The grid's message is a job's message (`DiscordJobListener`: the same pacing, the same exactly-once posting); its
result is the grid image (and one image per Z value), the base settings, the axes, and menus that open any cell
as an ordinary result, with that cell's own buttons (re-roll, edit, upscale, vary…). The menus are persistent:
their custom id carries the grid's job id, the cells are read from the database when one is chosen.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import discord

from bot.exts.common.interactions import admit
from bot.exts.common.views import ActionButton, dispatch
from bot.exts.imagine import _format
from bot.exts.imagine._delivery import DiscordJobListener
from bot.exts.imagine._views import ACTIONS
from bot.services.records import JobRecord

OPTIONS_PER_MENU = 25  # Discord's limit for a select menu
MENUS = 4  # one row is left for the buttons
GRID_ACTIONS = {action: ACTIONS[action] for action in ("info", "delete")}  # a grid is not re-rolled or edited


class GridButton(ActionButton, template=ActionButton.template_for("job")):
    """The grid's own buttons, under the job's ids (`sdbot:job:<id>:info|delete`): the job handler serves them,
    and a restart finds the grid's post by them as it finds any job's."""

    KIND, ACTIONS, COG, HANDLER = "job", GRID_ACTIONS, "Imagine", "on_job_button"


class CellSelect(
    discord.ui.DynamicItem[discord.ui.Select], template=r"sdbot:cell:(?P<job>[0-9]{1,19}):(?P<part>[0-9])"
):
    """A menu of a grid's cells (values: cell indexes); choosing one posts that cell as an ordinary result."""

    def __init__(self, job_id: int, part: int, labels: list[str] | None = None) -> None:
        first = part * OPTIONS_PER_MENU
        shown = (labels or [])[first : first + OPTIONS_PER_MENU]
        options = [
            discord.SelectOption(
                label=_format.clip(f"{first + i + 1}. {label or 'the cell'}", 100), value=str(first + i)
            )
            for i, label in enumerate(shown)
        ]
        last = first + max(len(shown), 1)
        super().__init__(
            discord.ui.Select(
                custom_id=f"sdbot:cell:{job_id}:{part}",
                placeholder=f"Open a cell ({first + 1}-{last}) as an image of its own…",
                options=options or [discord.SelectOption(label="-", value=str(first))],
                row=part,
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> CellSelect:
        return cls(int(match["job"]), int(match["part"]))

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await admit(interaction)

    async def callback(self, interaction: discord.Interaction) -> Any:
        data: Any = interaction.data or {}
        values = data.get("values") or []
        index = int(values[0]) if values and str(values[0]).isdigit() else -1
        await dispatch(interaction, "Xyz", "on_cell", self.job_id, index)


def grid_view(job_id: int, labels: list[str]) -> discord.ui.View:
    """Menus of the cells (25 to a menu), then the grid's buttons."""
    view = discord.ui.View(timeout=None)
    for part in range(min(MENUS, -(-len(labels) // OPTIONS_PER_MENU))):
        view.add_item(CellSelect(job_id, part, labels))
    for action in GRID_ACTIONS:
        view.add_item(GridButton(job_id, action, row=MENUS))
    return view


class DiscordGridListener(DiscordJobListener):
    """A grid's Discord side: a job's, with progress in cells and the grid as its result."""

    async def cells(self, job_id: int, done: int, total: int) -> None:
        self._update(content=self._prefix() + _format.progress_line(job_id, "cells", step=done, total=total))

    async def _result(
        self, job: JobRecord, files: list[Path], notes: list[str]
    ) -> tuple[str, discord.Embed, discord.ui.View]:
        grid = await self.bot.services.grids.grid_of_job(job.id)
        labels = [label for label, _ in grid.cells]
        embed = _format.parameters_embed(job.id, job.request, job.sources or {}, [job.seed] if job.seed else None)
        embed.add_field(name="X/Y/Z plot", value=_format.clip("\n".join(grid.axes), 1024), inline=False)
        failed = sum(1 for _, cell in grid.cells if cell.status not in ("posted", "done"))
        if failed:
            notes = [*notes, f"{failed} cell(s) failed and are black"]
        what = f"your {len(grid.cells)}-cell grid is ready"
        return _format.final_content(job.id, None, notes, len(files), what), embed, grid_view(job.id, labels)
