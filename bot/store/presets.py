"""Presets: named subsets of generation options, per Discord user; reading and writing them.

Names are 1-32 characters of ASCII letters, digits, `-` and `_`, compared case-insensitively ("Portrait" and
"portrait" are the same preset; the stored spelling is the one last saved). ASCII only, because Unicode case
folding has surprises (`ß`/`SS`, dotted/dotless i) that would make "is this the same name?" hard to predict,
and because the names are typed in slash-command options and shown in autocomplete.

Every function takes the session first and leaves committing to the caller. Writes lock the user's row first
(see `bot.store.users.ensure_user`), so counting against the limit and "one default per user" hold under
concurrent writers on PostgreSQL too. The export file is `bot.store.preset_export`; what of an A1111 infotext
becomes a preset is the services' (`bot.services.preset_infotext`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete as sql_delete
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.errors import (
    InvalidOptions,
    InvalidPresetName,
    PresetExists,
    PresetLimit,
    PresetNotFound,
)
from bot.store.models import DefaultPreset, Preset, insert, utcnow
from bot.store.options import validate_options
from bot.store.users import ensure_user
from engine.config import Limits

DEFAULT_LIMIT = 50  # presets per user; the config's [database] max_presets_per_user overrides it
NAME_MAX = 32
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")
NAME_RULE = "1-32 characters: letters a-z, digits, '-' and '_'"


@dataclass(frozen=True)
class SaveResult:
    preset: Preset
    created: bool  # False: an existing preset was updated


# --- names ---------------------------------------------------------------------------------------------------


def validate_name(name: Any) -> str:
    """The name with surrounding whitespace removed, or `InvalidPresetName` saying what is allowed."""
    if not isinstance(name, str):
        raise InvalidPresetName(f"a preset name must be text ({NAME_RULE})")
    stripped = name.strip()
    if not stripped:
        raise InvalidPresetName(f"a preset name cannot be empty ({NAME_RULE})")
    if len(stripped) > NAME_MAX:
        raise InvalidPresetName(f"preset name {_show(stripped)} is {len(stripped)} characters long; use {NAME_RULE}")
    if not NAME_PATTERN.fullmatch(stripped):
        bad = next(ch for ch in stripped if not NAME_PATTERN.fullmatch(ch))
        raise InvalidPresetName(f"preset name {_show(stripped)} contains {bad!r}; use {NAME_RULE}")
    return stripped


def name_key(name: str) -> str:
    """What uniqueness and lookups compare: the validated name, lower-cased."""
    return validate_name(name).lower()


def _show(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


# --- reading -------------------------------------------------------------------------------------------------


async def find(s: AsyncSession, user_id: int, name: str, *, for_update: bool = False) -> Preset | None:
    """The user's preset called `name` (any case), or None.

    `for_update=True` when the caller will write something computed from what it read (lock on PostgreSQL;
    SQLite write transactions are serialized anyway).
    """
    stmt = select(Preset).where(Preset.user_id == user_id, Preset.name_key == name_key(name))
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return (await s.execute(stmt)).scalar_one_or_none()


async def get(s: AsyncSession, user_id: int, name: str, *, for_update: bool = False) -> Preset:
    """The user's preset called `name` (any case), or `PresetNotFound`."""
    preset = await find(s, user_id, name, for_update=for_update)
    if preset is None:
        raise PresetNotFound(f"you have no preset named {validate_name(name)!r}")
    return preset


async def list_for_user(s: AsyncSession, user_id: int) -> list[Preset]:
    """All of the user's presets, by name."""
    stmt = select(Preset).where(Preset.user_id == user_id).order_by(Preset.name_key)
    return list((await s.execute(stmt)).scalars())


async def names(s: AsyncSession, user_id: int, prefix: str = "", limit: int = 25) -> list[str]:
    """The user's preset names starting with `prefix` (any case), by name: for autocomplete (one query)."""
    stmt = select(Preset.name).where(Preset.user_id == user_id)
    prefix = prefix.strip().lower() if isinstance(prefix, str) else ""
    if prefix:
        stmt = stmt.where(Preset.name_key.startswith(prefix, autoescape=True))
    stmt = stmt.order_by(Preset.name_key).limit(limit)
    return list((await s.execute(stmt)).scalars())


async def count(s: AsyncSession, user_id: int) -> int:
    stmt = select(func.count()).select_from(Preset).where(Preset.user_id == user_id)
    return int((await s.execute(stmt)).scalar_one())


async def get_default(s: AsyncSession, user_id: int) -> Preset | None:
    """The user's default preset, or None."""
    stmt = (
        select(Preset).join(DefaultPreset, DefaultPreset.preset_id == Preset.id).where(DefaultPreset.user_id == user_id)
    )
    return (await s.execute(stmt)).scalar_one_or_none()


# --- writing -------------------------------------------------------------------------------------------------


async def save(
    s: AsyncSession,
    user_id: int,
    name: str,
    options: Mapping[str, Any],
    *,
    limit: int = DEFAULT_LIMIT,
    limits: Limits = Limits(),
) -> SaveResult:
    """Create the preset, or replace the options of the user's preset of that name; says which.

    The options replace the old ones entirely (a preset is a subset: merging would make removing an option
    impossible). Raises `InvalidPresetName`, `InvalidOptions` (naming the option), `PresetLimit`.
    """
    clean_name = validate_name(name)
    clean = preset_options(options, limits)
    await ensure_user(s, user_id, lock=True)
    existing = await _locked(s, user_id, clean_name)
    if existing is not None:
        existing.name = clean_name
        existing.options = clean
        existing.updated_at = utcnow()
        await s.flush()
        return SaveResult(existing, created=False)
    await check_room(s, user_id, 1, limit)
    preset = await insert(s, Preset(user_id=user_id, name=clean_name, name_key=clean_name.lower(), options=clean))
    return SaveResult(preset, created=True)


async def rename(s: AsyncSession, user_id: int, old: str, new: str) -> Preset:
    """Rename a preset (a change of case only is allowed); `PresetNotFound`, `PresetExists`."""
    new_name = validate_name(new)
    await ensure_user(s, user_id, lock=True)
    preset = await _locked(s, user_id, old)
    if preset is None:
        raise PresetNotFound(f"you have no preset named {validate_name(old)!r}")
    if new_name.lower() != preset.name_key:
        clash = await find(s, user_id, new_name)
        if clash is not None:
            raise PresetExists(f"you already have a preset named {clash.name!r}; delete it or pick another name")
    preset.name, preset.name_key = new_name, new_name.lower()
    preset.updated_at = utcnow()
    await s.flush()
    return preset


async def delete(s: AsyncSession, user_id: int, name: str) -> None:
    """Delete a preset (and its being the default); `PresetNotFound`."""
    await ensure_user(s, user_id, lock=True)
    preset = await _locked(s, user_id, name)
    if preset is None:
        raise PresetNotFound(f"you have no preset named {validate_name(name)!r}")
    await s.execute(sql_delete(DefaultPreset).where(DefaultPreset.preset_id == preset.id))
    await s.delete(preset)
    await s.flush()


async def set_default(s: AsyncSession, user_id: int, name: str) -> Preset:
    """Make the preset the user's default (replacing any other); `PresetNotFound`."""
    await ensure_user(s, user_id, lock=True)
    preset = await _locked(s, user_id, name)
    if preset is None:
        raise PresetNotFound(f"you have no preset named {validate_name(name)!r}")
    row = await s.get(DefaultPreset, user_id)
    if row is None:
        s.add(DefaultPreset(user_id=user_id, preset_id=preset.id))
    else:
        row.preset_id = preset.id
    await s.flush()
    return preset


async def clear_default(s: AsyncSession, user_id: int) -> bool:
    """Unset the user's default preset; False when there was none."""
    default = await s.get(DefaultPreset, user_id)
    if default is None:
        return False
    await s.delete(default)
    await s.flush()
    return True


# --- helpers -------------------------------------------------------------------------------------------------


def preset_options(options: Any, limits: Limits) -> dict[str, Any]:
    """The options a preset may hold, validated (`InvalidOptions` naming the option); at least one."""
    clean = validate_options(options, limits=limits, what="preset option", allow_controls=True)
    if not clean:
        raise InvalidOptions("a preset needs at least one option")
    return clean


async def _locked(s: AsyncSession, user_id: int, name: str) -> Preset | None:
    return await find(s, user_id, name, for_update=True)


async def check_room(s: AsyncSession, user_id: int, adding: int, limit: int) -> None:
    """`PresetLimit` unless the user has room for `adding` more presets."""
    if adding <= 0:
        return
    have = await count(s, user_id)
    if have + adding > limit:
        if adding == 1:
            raise PresetLimit(
                f"you already have {have} presets, the limit is {limit}; delete one first, "
                "or save over an existing preset by using its name"
            )
        raise PresetLimit(f"importing {adding} new presets would give you {have + adding}; the limit is {limit}")
