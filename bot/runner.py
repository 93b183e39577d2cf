"""`sdbot run`'s code path: open the database (migrating it), start the engine worker, build the services and
run the bot until stopped. Tests drive this same path against the local Discord stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from bot.config import Config
from bot.discord_endpoints import point_discord_at
from bot.services import Services
from bot.services.catalog import ModelCatalog
from bot.services.jobs import JobService
from bot.services.moderation import ModerationService
from bot.services.presets import PresetService
from bot.services.ratelimit import Rate, RateLimits
from bot.store import migrate
from bot.store.db import check_writable, make_engine, make_sessions, ping
from bot.store.journal import Journal

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def open_services(config: Config, make_worker: Callable[[Any], Any] | None = None,
                        ) -> AsyncIterator[Services]:
    """Database (migrated to head), engine worker and services; everything closed on exit.

    `make_worker(engine_config)` builds the (not yet started) worker: `[engine] backend`'s by default; tests
    pass one whose render they control."""
    if make_worker is None:
        from engine.backends import make_worker

    engine_config = config.engine_config()
    db = make_engine(config.database_url, busy_timeout_ms=config.settings.database.busy_timeout_ms)
    try:
        await ping(db)
        await migrate.upgrade(db)
        await check_writable(db)  # a read-only database stops the start with one line, not every command
        sessions = make_sessions(db)
        worker = make_worker(engine_config)  # [engine] backend: in-process, or replicas on a Ray cluster
        worker.start()
        try:
            await worker.ready()  # a child or Ray that cannot start: fail now, with a readable message
            await _preload(worker)
            await load_classifier(config, worker)  # a missing or broken model stops the start with one line
            jobs = JobService(sessions, worker, config.outputs_dir, limits=engine_config.limits,
                              max_active_per_user=engine_config.max_queued_per_user,
                              post_retry_s=config.settings.discord.post_retry_s,
                              post_backoff_s=config.settings.discord.post_backoff_s)
            presets = PresetService(sessions, limits=engine_config.limits,
                                    max_per_user=config.settings.database.max_presets_per_user,
                                    relink=_relinker(engine_config))
            moderation = _moderation(config, sessions, jobs)
            await moderation.start()
            jobs.image_gate = moderation.gate_images
            journal = Journal(config.journal_path)  # acknowledged commands, durable before the deferral
            try:
                yield Services(config, db, sessions, worker, jobs, presets, ModelCatalog(engine_config), moderation,
                               journal)
                await moderation.close()
                await jobs.shutdown(config.settings.discord.shutdown_timeout_s)  # no-op after serve's
            finally:
                journal.close()
        finally:
            await worker.close()
    finally:
        await db.dispose()


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
    """Imported infotexts' LoRAs and embeddings, renamed to this models dir's files by hash."""
    from functools import partial

    from engine.network_import import relink_infotext
    from engine.networks import NetworkLibrary

    return partial(relink_infotext, library=NetworkLibrary(engine_config))


def _moderation(config: Config, sessions, jobs: JobService) -> ModerationService:
    m = config.settings.moderation
    rates = RateLimits(Rate(m.user_rate, m.user_period_s), Rate(m.guild_rate, m.guild_period_s), m.rate_wait_s)
    return ModerationService(sessions, jobs, rates, limits=jobs.limits, max_queued_per_guild=m.max_queued_per_guild,
                             global_bans=frozenset(m.banned_users), image_policy=config.image_policy())


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
        from engine.classifier import load_classifier as load

        classifier = await asyncio.to_thread(load, path)
    policy.check_labels(classifier.labels, str(path))
    return classifier


async def serve(config: Config, token: str, stop: asyncio.Event | None = None,
                started: asyncio.Future | None = None, make_worker: Callable[[Any], Any] | None = None) -> None:
    """Run the bot until `stop` is set (or forever); `started` receives the bot once it is ready."""
    from bot.app import make_bot

    settings = config.settings.discord
    point_discord_at(settings.api_base_url, settings.gateway_url)
    async with open_services(config, make_worker) as services:
        bot = make_bot(config, services)
        async with bot:
            runner = asyncio.create_task(bot.start(token), name="discord")
            if started is not None:
                ready = asyncio.create_task(bot.wait_until_ready())
                await asyncio.wait([runner, ready], return_when=asyncio.FIRST_COMPLETED)
                if runner.done():
                    ready.cancel()
                    runner.result()  # raises the login or connection error
                started.set_result(bot)
            waiters = [runner] + ([asyncio.create_task(stop.wait())] if stop is not None else [])
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if runner.done():
                runner.result()
            for task in waiters[1:]:
                task.cancel()
            # Still connected: the running job may finish and post; new commands hear "restarting".
            await services.jobs.shutdown(settings.shutdown_timeout_s)
        log.info("bot stopped")
