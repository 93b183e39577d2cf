"""Services: the only callers of `bot.store` and `engine`; cogs, views and the CLI call these.

The path of a command is docs/architecture.md: `submissions` makes it a job, `jobs` runs and posts it, `review`
holds what moderators look at, `moderation` decides who may do what.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.config import Config
from bot.services.bans import Bans
from bot.services.catalog import ModelCatalog
from bot.services.grids import GridService
from bot.services.jobs import JobService
from bot.services.moderation import ModerationService
from bot.services.presets import PresetService
from bot.services.review import ImageReview
from bot.services.submission import Submissions
from bot.store.journal import Journal
from engine.backends.base import Backend


@dataclass(frozen=True)
class Services:
    """Built once per bot (`bot.runner.build_services`) and handed to it: no module-level singletons."""

    config: Config
    db: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    worker: Backend
    jobs: JobService
    grids: GridService  # X/Y/Z grids: their cells in the queue, the grid posted once
    presets: PresetService
    submissions: Submissions
    review: ImageReview
    moderation: ModerationService
    bans: Bans
    catalog: ModelCatalog  # installed models' names, for autocomplete and /models
    journal: Journal  # acknowledged commands not yet saved
