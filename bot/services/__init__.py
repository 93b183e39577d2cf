"""Services: the only callers of `bot.store` and `engine`; cogs, views and the CLI call these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.config import Config
from bot.services.catalog import ModelCatalog


@dataclass
class Services:
    """Built once by `bot.runner` and handed to the bot: no module-level singletons."""

    config: Config
    db: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    worker: Any  # engine.worker.Worker
    jobs: Any  # bot.services.jobs.JobService
    presets: Any  # bot.services.presets.PresetService
    catalog: ModelCatalog  # installed models' names, for autocomplete and /models
    moderation: Any = None  # bot.services.moderation.ModerationService
    journal: Any = None  # bot.store.journal.Journal: acknowledged commands not yet saved
