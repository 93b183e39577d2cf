"""Guild settings: moderation mode, review channel and moderator role, banned/flagged words, the forced
negative prompt, caps, allowed models/VAEs, NSFW policy and the guild's default options.

A guild that never changed anything has no row; `get()` then returns an unsaved row holding the defaults, so
callers need not care. Changes go through `update()` / `add_words()` / `remove_words()`, which validate, create
the row when needed and lock it, so two admins editing the word lists at once both get their words in.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.errors import InvalidGuildSetting, InvalidOptions
from bot.store.models import GuildSettings, ModerationMode, NotifyBy, NsfwPolicy, utcnow
from bot.store.options import validate_options
from bot.store.users import upsert_ignore
from engine.config import Limits

WordKind = Literal["banned", "flagged"]
MAX_WORDS = 500
MAX_WORD_CHARS = 100
MAX_NAMES = 200  # allowed models / VAEs

_CAPS = ("max_steps", "max_pixels", "max_batch", "max_jobs_per_user", "max_prompt_chars")
_IDS = ("review_channel_id", "moderator_role_id")
_NAME_LISTS = ("allowed_models", "allowed_vaes")
_WORD_LISTS = {"banned": "banned_words", "flagged": "flagged_words"}
_SCORES = ("nsfw_flag_above", "nsfw_block_above")  # image classifier thresholds in age-restricted channels
SETTABLE: tuple[str, ...] = (
    "moderation_mode",
    *_IDS,
    "banned_words",
    "flagged_words",
    "forced_negative_prompt",
    "defaults",
    *_CAPS,
    *_NAME_LISTS,
    "nsfw_policy",
    "notify_by",
    "previews",
    *_SCORES,
)


def defaults_for(guild_id: int) -> GuildSettings:
    """An unsaved row with every default filled in (column defaults only apply on INSERT)."""
    return GuildSettings(
        guild_id=guild_id,
        moderation_mode=ModerationMode.OFF.value,
        review_channel_id=None,
        moderator_role_id=None,
        banned_words=[],
        flagged_words=[],
        forced_negative_prompt="",
        defaults={},
        max_steps=None,
        max_pixels=None,
        max_batch=None,
        max_jobs_per_user=None,
        allowed_models=[],
        allowed_vaes=[],
        nsfw_policy=NsfwPolicy.NSFW_CHANNELS.value,
        notify_by=NotifyBy.DM.value,
        max_prompt_chars=None,
        previews=False,
        nsfw_flag_above=None,
        nsfw_block_above=None,
        updated_at=utcnow(),
    )


async def get(s: AsyncSession, guild_id: int) -> GuildSettings:
    """The guild's settings; an unsaved row of defaults when the guild never changed anything."""
    row = await s.get(GuildSettings, guild_id)
    return row if row is not None else defaults_for(guild_id)


async def lock(s: AsyncSession, guild_id: int) -> None:
    """Hold the guild's row until the transaction ends (PostgreSQL; SQLite already serializes writers), so a
    count of the guild's jobs stays true until this transaction's insert: made with the defaults if missing."""
    await _locked(s, guild_id)


async def update(s: AsyncSession, guild_id: int, *, limits: Limits = Limits(), **changes: Any) -> GuildSettings:
    """Set the given settings (names as in `SETTABLE`); each value is checked, `InvalidGuildSetting` if not."""
    clean = {key: _check(key, value, limits) for key, value in changes.items()}
    row = await _locked(s, guild_id)
    for key, value in clean.items():
        setattr(row, key, value)
    _check_scores(row)
    row.updated_at = utcnow()
    await s.flush()
    return row


async def add_words(s: AsyncSession, guild_id: int, kind: WordKind, words: Iterable[str]) -> list[str]:
    """Add words to the banned or flagged list; returns those that were not already there."""
    column = _word_column(kind)
    new = _words(column, words)
    row = await _locked(s, guild_id)
    current = list(getattr(row, column))
    added = [w for w in new if w not in current]
    if len(current) + len(added) > MAX_WORDS:
        raise InvalidGuildSetting(f"the {kind} word list can hold at most {MAX_WORDS} entries")
    if added:
        setattr(row, column, current + added)  # a new list: JSON columns are not mutation-tracked
        row.updated_at = utcnow()
        await s.flush()
    return added


async def remove_words(s: AsyncSession, guild_id: int, kind: WordKind, words: Iterable[str]) -> list[str]:
    """Remove words from the banned or flagged list; returns those that were there."""
    column = _word_column(kind)
    gone = set(_words(column, words))
    row = await _locked(s, guild_id)
    current = list(getattr(row, column))
    removed = [w for w in current if w in gone]
    if removed:
        setattr(row, column, [w for w in current if w not in gone])
        row.updated_at = utcnow()
        await s.flush()
    return removed


async def reset(s: AsyncSession, guild_id: int) -> bool:
    """Back to all defaults; False when the guild had nothing stored."""
    row = await s.get(GuildSettings, guild_id)
    if row is None:
        return False
    await s.delete(row)
    await s.flush()
    return True


# --- helpers -------------------------------------------------------------------------------------------------


async def _locked(s: AsyncSession, guild_id: int) -> GuildSettings:
    if isinstance(guild_id, bool) or not isinstance(guild_id, int) or guild_id < 0:
        raise ValueError(f"a Discord guild id must be a non-negative int, got {guild_id!r}")
    values = {k: getattr(defaults_for(guild_id), k) for k in ("guild_id", *SETTABLE, "updated_at")}
    stmt = upsert_ignore(s, GuildSettings, values, ["guild_id"])
    if stmt is not None:
        await s.execute(stmt)
    elif await s.get(GuildSettings, guild_id) is None:  # pragma: no cover
        s.add(defaults_for(guild_id))
        await s.flush()
    locked = (
        select(GuildSettings)
        .where(GuildSettings.guild_id == guild_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await s.execute(locked)).scalar_one()


def _check_scores(row: GuildSettings) -> None:
    flag, block = row.nsfw_flag_above, row.nsfw_block_above
    if (flag is None) != (block is None):
        raise InvalidGuildSetting("the age-restricted channels' flag and block scores are set together")
    if flag is not None and block is not None and flag > block:
        raise InvalidGuildSetting(f"the flag score ({flag:g}) must not be above the block score ({block:g})")


def _word_column(kind: str) -> str:
    if kind not in _WORD_LISTS:
        raise InvalidGuildSetting(f"word list must be 'banned' or 'flagged', not {kind!r}")
    return _WORD_LISTS[kind]


def _words(column: str, words: Any) -> list[str]:
    if isinstance(words, str) or not isinstance(words, Iterable):
        raise InvalidGuildSetting(f"{column.replace('_', ' ')} must be a list of words")
    out: list[str] = []
    for word in words:
        if not isinstance(word, str):
            raise InvalidGuildSetting(f"{column.replace('_', ' ')} must be text, got {word!r}")
        norm = " ".join(word.split()).lower()
        if not norm:
            continue
        if len(norm) > MAX_WORD_CHARS:
            raise InvalidGuildSetting(f"a word or phrase may be at most {MAX_WORD_CHARS} characters")
        if norm not in out:
            out.append(norm)
    return out


def _check(key: str, value: Any, limits: Limits) -> Any:
    if key not in SETTABLE:
        raise InvalidGuildSetting(f"unknown guild setting {key!r}; settings are {', '.join(SETTABLE)}")
    if key == "moderation_mode":
        return _choice(key, value, ModerationMode)
    if key == "nsfw_policy":
        return _choice(key, value, NsfwPolicy)
    if key == "notify_by":
        return _choice(key, value, NotifyBy)
    if key == "previews":
        if not isinstance(value, bool):
            raise InvalidGuildSetting(f"previews must be true or false, got {value!r}")
        return value
    if key in _SCORES:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise InvalidGuildSetting(f"{key.replace('_', ' ')} must be a score from 0 to 1 or None, got {value!r}")
        return float(value)
    if key in _IDS:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidGuildSetting(f"{key.replace('_', ' ')} must be a Discord id or None, got {value!r}")
        return value
    if key in _CAPS:
        if value is None:
            return None
        low = 64 * 64 if key == "max_pixels" else 1  # the smallest image is 64x64
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidGuildSetting(
                f"{key.replace('_', ' ')} must be a whole number of at least {low}, got {value!r}"
            )
        return value
    if key in ("banned_words", "flagged_words"):
        words = _words(key, value)
        if len(words) > MAX_WORDS:
            raise InvalidGuildSetting(f"a word list can hold at most {MAX_WORDS} entries")
        return words
    if key in _NAME_LISTS:
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise InvalidGuildSetting(f"{key.replace('_', ' ')} must be a list of names")
        items = list(value)
        names = [v.strip() for v in items if isinstance(v, str) and v.strip()]
        if len(names) != len(items) or len(names) > MAX_NAMES:
            raise InvalidGuildSetting(f"{key.replace('_', ' ')} must be up to {MAX_NAMES} non-empty names")
        return list(dict.fromkeys(names))
    if key == "forced_negative_prompt":
        if not isinstance(value, str):
            raise InvalidGuildSetting("the forced negative prompt must be text")
        if len(value) > limits.max_prompt_chars:
            raise InvalidGuildSetting(
                f"the forced negative prompt is {len(value)} characters long; the limit is {limits.max_prompt_chars}"
            )
        return value.strip()
    if key == "defaults":
        try:
            return validate_options(value or {}, limits=limits, what="guild default")
        except InvalidOptions as exc:
            raise InvalidGuildSetting(str(exc)) from None
    raise AssertionError(key)  # pragma: no cover


def _choice(key: str, value: Any, enum: type[ModerationMode] | type[NsfwPolicy] | type[NotifyBy]) -> str:
    allowed = [m.value for m in enum]
    if value not in allowed:
        raise InvalidGuildSetting(f"{key.replace('_', ' ')} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)
