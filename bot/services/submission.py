"""The one way a command becomes a job: `Submissions.submit(command, listen)`.

For /imagine, the edit modal, re-roll, upscale / vary and a command replayed from the journal alike:

1. in memory, before any database work: the bot is not shutting down, the member is not banned, and the
   cooldown and the member's and server's rates allow one more image (`bot.services.ratelimit`);
2. in ONE transaction: the guild's settings are read once; the options are resolved against the presets and the
   guild's defaults and caps (`bot.services.presets.resolve_in`), unless the command carries a request made
   from an earlier job; the prompt is screened (`bot.services.policy.screen`: length, banned and flagged words);
   every queue cap is counted under locks (`policy.check_caps`); and the job is inserted, `queued` or
   `awaiting_review` with its review item. Cap check and insert share the transaction, so they cannot race;
3. after the commit: a queued job goes to the engine (`JobService.start`), its request saying whether to make
   live previews (the guild's settings: `policy.previews_allowed`); a held one to the review stage.

An X/Y/Z grid (`submit_grid`) takes the same way: its axes are read and its size checked against the cell cap
before any database work; in one transaction every cell's request is made and checked (the server's step cap,
models and VAEs apply to each cell), every distinct prompt screened (a grid cannot wait for prompt review), the caps
counted (the grid as one of the member's jobs, its cells against the server's queue cap), and the grid's own job,
its cells' jobs and the grid rows inserted; after the commit the grid service feeds the cells to the queue.

The listener (the Discord side of the job, effects only) is made by `listen()` after the commit. The transaction
may be re-run when the database was busy: it does database work only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.errors import UserError
from bot.services import policy
from bot.services.bans import Bans
from bot.services.grids import GridListener, GridService
from bot.services.jobs import RESTARTING, JobListener, JobService
from bot.services.presets import check_allowed, resolve_in
from bot.services.ratelimit import RateLimits
from bot.services.records import JobRecord, record
from bot.services.resolution import fit_pixels
from bot.services.review import ImageReview
from bot.services.xyz.axes import NO_AXIS, parse_axis
from bot.services.xyz.plan import GridPlan, check_cell_cap, plan_grid
from bot.store import grids as grid_store
from bot.store import guilds as guild_store
from bot.store import jobs as job_store
from bot.store import moderation as mod_store
from bot.store.db import transaction
from bot.store.models import GuildSettings, Job, JobStatus, ModerationItem
from engine.config import Limits
from engine.render.input_image import default_size, size_multiple
from engine.request import GenerationRequest


@dataclass(frozen=True)
class Requester:
    """Who asked and where; the ids Discord gave us."""

    user_id: int
    guild_id: int | None = None
    channel_id: int | None = None
    interaction_id: int | None = None
    age_restricted: bool = False  # the channel is age-restricted (NSFW): the review's thresholds for such channels


@dataclass(frozen=True)
class Command:
    """What a member asked for. Either `options` (typed and inline, merged; typed win) with `presets` to resolve,
    or a `request` made from an earlier job (re-roll, upscale, vary), which is only screened and capped."""

    who: Requester
    options: Mapping[str, Any] = field(default_factory=dict)
    presets: Sequence[str] = ()
    request: GenerationRequest | None = None
    sources: Mapping[str, str] = field(default_factory=dict)  # added to (and over) the resolved sources
    what: str = ""  # a request made from an earlier job, named in a refusal ("Upscale ×2 of job #5, image 1")
    start_sized: bool = False  # the start image chose the size: rounded down for the resolved model's family
    # A request whose size may shrink to the server's pixel cap (Pan's grown canvas: the engine lays the image out
    # at whatever size the job gets) instead of being refused; rounded for the model's family too.
    fit_to_cap: bool = False
    paced: bool = True  # False: a command replayed after a restart, paced when it was first typed


@dataclass(frozen=True)
class _Accepted:
    job: Job
    request: GenerationRequest
    item: ModerationItem | None
    settings: GuildSettings | None


@dataclass(frozen=True)
class _AcceptedGrid:
    job: Job
    grid_id: int
    settings: GuildSettings | None


@dataclass
class Submissions:
    sessions: async_sessionmaker[AsyncSession]
    jobs: JobService
    review: ImageReview
    bans: Bans
    rates: RateLimits
    family_of: Callable[[str], Awaitable[str]]  # a checkpoint's family ("sd", "sdxl"): the catalog's, read in a thread
    caps: policy.Caps = policy.Caps()
    limits: Limits = Limits()
    grids: GridService | None = None

    async def submit(self, command: Command, listen: Callable[[], JobListener]) -> JobRecord:
        """Make the command a job (queued, or held for review) or raise `UserError` saying why not; `listen()`
        makes its Discord side. The guild's settings, read once here, say whether the engine makes previews."""
        await self._admit(command)
        accepted = await transaction(self.sessions, self._accept, command)
        listener = listen()
        if accepted.item is not None:
            self.jobs.keep(accepted.job.id, listener)  # for the moderators' decision
            await self.review.prompt_held(accepted.job, accepted.item, listener, accepted.settings)
        else:
            request = accepted.request.replace(previews=policy.previews_allowed(accepted.settings))
            await self.jobs.start(accepted.job, request, listener)
        return record(JobRecord, accepted.job)

    async def submit_grid(
        self, command: Command, axes: Sequence[str | None], listen: Callable[[], GridListener]
    ) -> JobRecord:
        """Make the command an X/Y/Z grid (`axes`: the X, Y and Z texts, `Steps: 10, 20`; None for an unused one)
        or raise `UserError` saying why not. Returns the grid's own job."""
        if self.grids is None:
            raise UserError("X/Y/Z grids are not available here")
        x, y, z = (parse_axis(text) if text else NO_AXIS for text in axes)
        check_cell_cap((x, y, z), self.caps.max_grid_cells)
        await self._admit(command)
        accepted = await transaction(self.sessions, self._accept_grid, command, (x, y, z))
        await self.grids.start(accepted.grid_id, listen())  # a grid's cells make no previews
        return record(JobRecord, accepted.job)

    async def _admit(self, command: Command) -> None:
        """The checks before any database work: not shutting down, not banned, cooldown and rates."""
        who = command.who
        if self.jobs.stopping:
            raise UserError(RESTARTING)
        ban = self.bans.ban_of(who.user_id, who.guild_id)
        if ban is not None:
            raise UserError(ban.message())
        if command.paced:
            self.rates.cooldown(who.user_id)
        await self.rates.acquire(who.user_id, who.guild_id)

    async def _accept_grid(self, s: AsyncSession, command: Command, axes: tuple) -> _AcceptedGrid:
        who = command.who
        settings = await guild_store.get(s, who.guild_id) if who.guild_id is not None else None
        resolved = await resolve_in(s, settings, who.user_id, command.presets, command.options, self.limits)
        base = resolved.request.replace(batch_size=1)  # a cell is one image
        if command.start_sized:  # the model is known now (typed, from a preset or the default)
            base = round_for_model(base, await self.family_of(base.model))
        plan = plan_grid(base.options(), *axes)
        cells = plan.requests(self.limits)
        _check_cells(plan, cells, settings)
        for prompt in dict.fromkeys(c.prompt for c in cells):
            if policy.screen(settings, prompt).hold:
                raise UserError("this server reviews prompts before they run, and a grid cannot wait for review")
        await policy.check_caps(s, who.user_id, settings, self.caps, cells=len(cells))
        own = await job_store.create(
            s,
            user_id=who.user_id,
            request=base.replace(seed=plan.cells[0].settings["seed"]),
            guild_id=who.guild_id,
            channel_id=who.channel_id,
            interaction_id=who.interaction_id,
            age_restricted=who.age_restricted,
            sources={**resolved.sources, **command.sources},
        )
        members = [
            await job_store.create(
                s,
                user_id=who.user_id,
                request=r,
                guild_id=who.guild_id,
                channel_id=who.channel_id,
                age_restricted=who.age_restricted,
            )
            for r in cells
        ]
        grid = await grid_store.create(s, job=own, axes=plan.axes.to_data(), cells=members)
        return _AcceptedGrid(own, grid.id, settings)

    async def _accept(self, s: AsyncSession, command: Command) -> _Accepted:
        who = command.who
        settings = await guild_store.get(s, who.guild_id) if who.guild_id is not None else None
        if command.request is None:
            resolved = await resolve_in(s, settings, who.user_id, command.presets, command.options, self.limits)
            request, sources = resolved.request, {**resolved.sources, **command.sources}
            if command.start_sized:  # the model is known now (typed, from a preset or the default)
                request = round_for_model(request, await self.family_of(request.model))
        else:
            request, sources = command.request, dict(command.sources)
            if command.fit_to_cap:
                request = await self._fitted(request, settings)
            if command.what:
                policy.check_pixels(settings, request.width, request.height, command.what)
        screening = policy.screen(settings, request.prompt)
        await policy.check_caps(s, who.user_id, settings, self.caps)
        job = await job_store.create(
            s,
            user_id=who.user_id,
            request=request,
            guild_id=who.guild_id,
            channel_id=who.channel_id,
            interaction_id=who.interaction_id,
            age_restricted=who.age_restricted,
            sources=sources,
            status=JobStatus.AWAITING_REVIEW if screening.hold else JobStatus.QUEUED,
        )
        item = await mod_store.hold(s, job.id, reason=screening.reason) if screening.hold else None
        return _Accepted(job, request, item, settings)

    async def _fitted(self, request: GenerationRequest, settings: GuildSettings | None) -> GenerationRequest:
        """`request` shrunk to the server's pixel cap if it is over it, then rounded for its model's family."""
        cap = settings.max_pixels if settings is not None else None
        if cap is not None and request.width * request.height > cap:
            width, height = fit_pixels(request.width, request.height, cap)
            request = request.replace(width=width, height=height)
        return round_for_model(request, await self.family_of(request.model))


def _check_cells(plan: GridPlan, cells: Sequence[GenerationRequest], settings: GuildSettings | None) -> None:
    """The server's rules on what the axes change: its step cap, and the models and VAEs it allows."""
    if settings is None:
        return
    for index, cell in enumerate(cells):
        where = ", ".join(plan.axes.cell_labels(index))
        try:
            if settings.max_steps is not None and cell.steps > settings.max_steps:
                raise UserError(f"this server allows at most {settings.max_steps} steps")
            check_allowed("model", cell.model, settings.allowed_models)
            check_allowed("VAE", cell.vae, settings.allowed_vaes, always=("auto", "none"))
        except UserError as exc:
            raise UserError(f"the cell {where}: {exc}") from None


def round_for_model(request: GenerationRequest, family: str) -> GenerationRequest:
    """A size the start image chose, rounded down for the job's model family: to 64 for SDXL (its buckets), else
    8. Applied after resolution, when the model is known; rounding down only shrinks the image, so the limits and
    the server's caps still hold."""
    width, height = default_size(request.width, request.height, request.limits, size_multiple(family))
    return (
        request if (width, height) == (request.width, request.height) else request.replace(width=width, height=height)
    )
