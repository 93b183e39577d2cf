"""The rules a submission is held to, read from the guild's settings: pure checks plus the caps' one query.

The submission pipeline (bot/services/submission.py) consults these inside its one transaction: `screen()` refuses
a prompt (length cap, banned words) or says it waits for review (`prompts` / `flagged` mode); `check_caps()` is
the one place the per-member and per-server queue caps are counted and their messages written, after taking the
locks that keep two racing commands from both getting the last slot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.errors import UserError
from bot.services.wordfilter import find_words
from bot.store import guilds as guild_store
from bot.store import jobs as job_store
from bot.store.db import transaction
from bot.store.models import GuildSettings, ModerationMode
from bot.store.users import ensure_user
from engine.jobs import member_cap_message

# Outside the submission pipeline (the image review, /config) a server's settings are kept this long: a change
# made through this process is seen at once, one made by another process within this time.
SETTINGS_TTL_S = 5.0
IMAGE_MODES = (ModerationMode.IMAGES.value, ModerationMode.AUTO.value)


@dataclass(frozen=True)
class Screening:
    hold: bool
    reason: str = ""


RUN = Screening(False)


@dataclass(frozen=True)
class Caps:
    """The bot-wide caps (config); a guild's own (`/config caps`) come from its settings."""

    max_active_per_user: int = 5  # [engine] max_queued_per_user
    max_queued_per_guild: int = 0  # [moderation] max_queued_per_guild; 0: no cap
    max_grid_cells: int = 25  # [moderation] max_grid_cells: cells in one X/Y/Z grid


def screen(settings: GuildSettings | None, prompt: str) -> Screening:
    """Run, or hold for review; a `UserError` naming the rule when the prompt may not run at all."""
    if settings is None:
        return RUN
    cap = settings.max_prompt_chars
    if cap is not None and len(prompt) > cap:
        raise UserError(f"this server allows prompts of up to {cap} characters; yours has {len(prompt)}")
    banned = find_words(prompt, settings.banned_words or [])
    if banned:
        raise UserError(
            f"your prompt was not run: this server bans the word “{banned[0]}” (however it is spelled). "
            "Rephrase the prompt without it"
        )
    mode = settings.moderation_mode
    if mode == ModerationMode.PROMPTS.value:
        return Screening(True, "every prompt is reviewed on this server")
    if mode == ModerationMode.FLAGGED.value:
        flagged = find_words(prompt, settings.flagged_words or [])
        if flagged:
            return Screening(True, "flagged: " + ", ".join(flagged))
    return RUN


def previews_allowed(settings: GuildSettings | None) -> bool:
    """A preview shows the picture before it is scored or reviewed: none where images are moderated."""
    return settings is not None and bool(settings.previews) and settings.moderation_mode not in IMAGE_MODES


def check_pixels(settings: GuildSettings | None, width: int, height: int, what: str) -> None:
    """A request made from an earlier one (upscale, vary) against the guild's pixel cap."""
    cap = settings.max_pixels if settings is not None else None
    if cap is not None and width * height > cap:
        raise UserError(f"{what} would be {width}x{height} = {width * height} pixels; this server's cap is {cap}")


async def check_caps(
    s: AsyncSession, user_id: int, settings: GuildSettings | None, caps: Caps, *, cells: int = 1
) -> None:
    """Every queue cap for one more job of `user_id`, counted under locks held until the transaction ends. A grid
    is one more of the member's jobs and `cells` more jobs in the server's queue.

    The member's row is locked (PostgreSQL `SELECT ... FOR UPDATE`; SQLite's `BEGIN IMMEDIATE` serializes
    writers already), and the guild's row too when the server-wide cap is on, so a concurrent submission waits
    for this one's insert and then counts it: two commands racing for the last slot cannot both get in.
    """
    await ensure_user(s, user_id, lock=True)
    active = await job_store.count_active(s, user_id)
    if active >= caps.max_active_per_user:
        raise UserError(
            f"{member_cap_message(active, caps.max_active_per_user)}. Wait for one to finish, or cancel one with /queue"
        )
    if settings is None:
        return
    guild_id = settings.guild_id
    if settings.max_jobs_per_user is not None:
        mine = await job_store.count_active(s, user_id, guild_id=guild_id)
        if mine >= settings.max_jobs_per_user:
            raise UserError(
                f"this server allows {settings.max_jobs_per_user} waiting jobs per member and you "
                f"have {mine}. Wait for one to finish, or cancel one with /queue"
            )
    if not caps.max_queued_per_guild:
        return
    await guild_store.lock(s, guild_id)
    waiting = await job_store.count_active_in_guild(s, guild_id)
    if cells > 1 and waiting + cells > caps.max_queued_per_guild:
        raise UserError(
            f"this server has {waiting} jobs waiting and the grid has {cells} cells; the bot allows a server "
            f"{caps.max_queued_per_guild} at a time. Try a smaller grid, or again when some have finished"
        )
    if waiting >= caps.max_queued_per_guild:
        raise UserError(
            f"this server has {waiting} jobs waiting, the most the bot allows a server "
            f"({caps.max_queued_per_guild}); try again when some have finished"
        )


@dataclass
class SettingsCache:
    """Guild settings for the paths that may be a few seconds stale (image review, who is a moderator)."""

    sessions: async_sessionmaker[AsyncSession]
    _kept: dict[int, tuple[float, GuildSettings]] = field(default_factory=dict)

    async def get(self, guild_id: int) -> GuildSettings:
        kept = self._kept.get(guild_id)
        if kept is not None and time.monotonic() - kept[0] < SETTINGS_TTL_S:
            return kept[1]
        row = await transaction(self.sessions, guild_store.get, guild_id)
        if len(self._kept) >= 10_000:
            self._kept.clear()
        self._kept[guild_id] = (time.monotonic(), row)
        return row

    def forget(self, guild_id: int) -> None:
        self._kept.pop(guild_id, None)
