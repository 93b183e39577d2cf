"""What the bot runs on: open the database (migrating it), start the engine worker and the journal (`open_core`),
and build every service on them (`build_services`). `bot.app.serve` runs the bot on these (`sdbot run`); tests
drive the same path against the local Discord stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.config import Config
from bot.services import Services
from bot.services.bans import Bans
from bot.services.catalog import ModelCatalog
from bot.services.grids import GridListener, GridService
from bot.services.jobs import JobListener, JobService
from bot.services.moderation import ModerationService
from bot.services.policy import Caps, SettingsCache
from bot.services.posting import PostFinder, PostOnce
from bot.services.presets import PresetService
from bot.services.ratelimit import Rate, RateLimits
from bot.services.records import JobRecord
from bot.services.review import ImageReview, ReviewNotifier
from bot.services.submission import Submissions
from bot.store import migrate
from bot.store.db import check_writable, make_engine, make_sessions, ping
from bot.store.journal import Journal
from engine.backends.base import Backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Core:
    """What the services stand on: the migrated database, the started engine backend and the command journal."""

    config: Config
    db: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    worker: Backend
    journal: Journal


@dataclass(frozen=True)
class DiscordSide:
    """The Discord adapters the services are built with (made by the bot: `bot.app.SdBot`)."""

    notifier: ReviewNotifier  # the review channel and members' notices
    listener_for: Callable[[JobRecord], JobListener]  # a job's Discord side when its command's is gone (a restart)
    posts: PostFinder  # where a job's post is looked for before a repeat (exactly-once posting)
    grid_listener_for: Callable[[JobRecord], GridListener] | None = None  # the same for a grid (its own job)


@contextlib.asynccontextmanager
async def open_core(config: Config, make_worker: Callable[[Any], Any] | None = None) -> AsyncIterator[Core]:
    """Database (migrated to head), engine worker and journal; everything closed on exit.

    `make_worker(engine_config)` builds the (not yet started) worker: `[engine] backend`'s by default; tests
    pass one whose render they control."""
    if make_worker is None:
        from engine.backends.factory import make_worker as configured_worker

        make_worker = configured_worker
    from engine.tiny.models import ensure_demo_model

    engine_config = config.engine_config()
    await asyncio.to_thread(ensure_demo_model, engine_config)  # no model configured or installed: the demo one
    db = make_engine(config.database_url, busy_timeout_ms=config.settings.database.busy_timeout_ms)
    try:
        await ping(db)
        await migrate.upgrade(db)
        await check_writable(db)  # a read-only database stops the start with one line, not every command
        worker = make_worker(engine_config)  # [engine] backend: in-process, or replicas on a Ray cluster
        worker.start()
        try:
            await worker.ready()  # a child or Ray that cannot start: fail now, with a readable message
            await _preload(worker)
            await load_classifier(config, worker)  # a missing or broken model stops the start with one line
            journal = Journal(config.journal_path)  # acknowledged commands, durable before the deferral
            try:
                yield Core(config, db, make_sessions(db), worker, journal)
            finally:
                journal.close()
        finally:
            await worker.close()
    finally:
        await db.dispose()


def build_services(core: Core, discord: DiscordSide) -> Services:
    """Every service, each given its collaborators in its constructor; calls go one way (docs/architecture.md)."""
    config, sessions = core.config, core.sessions
    engine_config = config.engine_config()
    limits = engine_config.limits
    m, d = config.settings.moderation, config.settings.discord
    settings_cache = SettingsCache(sessions)
    review = ImageReview(sessions, settings_cache, discord.notifier, image_policy=config.image_policy())
    grids: GridService | None = None

    def listener_for(job: JobRecord) -> JobListener:
        """A cell's listener is its grid's; any other job's is the Discord side's."""
        cell = grids.cell_listener(job) if grids is not None else None
        return cell if cell is not None else discord.listener_for(job)

    jobs = JobService(
        sessions,
        core.worker,
        config.outputs_dir,
        review,
        listener_for,
        PostOnce(discord.posts, retry_s=d.post_retry_s, backoff_s=d.post_backoff_s),
        settings_cache,
        limits=limits,
    )
    grids = GridService(
        jobs,
        discord.grid_listener_for or cast(Callable[[JobRecord], GridListener], discord.listener_for),
        limits=limits,
        member_cap=engine_config.max_queued_per_user,
    )
    bans = Bans(sessions, global_bans=frozenset(m.banned_users))
    rates = RateLimits(
        Rate(m.user_rate, m.user_period_s), Rate(m.guild_rate, m.guild_period_s), m.rate_wait_s, cooldown_s=d.cooldown_s
    )
    caps = Caps(
        max_active_per_user=engine_config.max_queued_per_user,
        max_queued_per_guild=m.max_queued_per_guild,
        max_grid_cells=m.max_grid_cells,
    )
    catalog = ModelCatalog(engine_config)
    presets = PresetService(
        sessions,
        limits=limits,
        max_per_user=config.settings.database.max_presets_per_user,
        relink=_relinker(engine_config),
    )
    return Services(
        config=config,
        db=core.db,
        sessions=sessions,
        worker=core.worker,
        jobs=jobs,
        grids=grids,
        presets=presets,
        submissions=Submissions(
            sessions, jobs, review, bans, rates, catalog.family_of, caps=caps, limits=limits, grids=grids
        ),
        review=review,
        moderation=ModerationService(sessions, jobs, review, bans, settings_cache, limits=limits),
        bans=bans,
        catalog=catalog,
        journal=core.journal,
    )


async def _preload(worker) -> None:
    """Load the default checkpoint and its default VAE before serving, so the first member's job does not pay for
    the load; log how long it took. A failure is only logged: the first job that needs the model reports it."""
    if not worker.in_process:  # the engine child and Ray replicas load their models when they start
        return
    started = time.perf_counter()
    try:
        name = await worker.call(lambda engine: engine.models.preload())
    except Exception as exc:
        log.warning("could not load the default checkpoint at start (%s); the first job will try again", exc)
        return
    log.info("default checkpoint %s and its VAE loaded in %.2f s", name, time.perf_counter() - started)


def _relinker(engine_config):
    """Imported infotexts' LoRAs and embeddings, renamed to this models dir's files by hash; notes on those and on
    the ControlNet units (their models here, their control image not in an infotext)."""
    from engine.control.library import ControlNetLibrary
    from engine.networks.hash_import import relink_infotext
    from engine.networks.library import NetworkLibrary

    networks, controlnets = NetworkLibrary(engine_config), ControlNetLibrary(engine_config)

    def relink(text: str) -> tuple[str, list[str]]:
        linked, notes = relink_infotext(text, library=networks)
        return linked, notes + controlnets.import_notes(text)

    return relink


async def load_classifier(config: Config, worker: Any = None) -> Any:
    """Load `[moderation] image_classifier` and check its labels (`ClassifierError` / `ConfigError`: one line).

    With the local worker it is loaded once, in the worker's thread on the engine's device, where it will score;
    otherwise (Ray replicas load their own, `sdbot run --check`) it is loaded here on the CPU, to check it.
    """
    policy, path = config.image_policy(), config.image_classifier
    if policy is None or path is None:
        return None
    if worker is not None and worker.in_process:
        classifier = await worker.call(lambda engine: engine.scorer.load())
    else:
        from engine.render.classifier import load_classifier as load

        classifier = await asyncio.to_thread(load, path)
    policy.check_labels(classifier.labels, str(path))
    return classifier
