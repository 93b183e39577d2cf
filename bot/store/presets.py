"""Presets: named subsets of generation options, per Discord user.

Names are 1-32 characters of ASCII letters, digits, `-` and `_`, compared case-insensitively ("Portrait" and
"portrait" are the same preset; the stored spelling is the one last saved). ASCII only, because Unicode case
folding has surprises (`ß`/`SS`, dotted/dotless i) that would make "is this the same name?" hard to predict,
and because the names are typed in slash-command options and shown in autocomplete.

Every function takes the session first and leaves committing to the caller. Writes lock the user's row first
(see `bot.store.users.ensure_user`), so counting against the limit and "one default per user" hold under
concurrent writers on PostgreSQL too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete as sql_delete
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.errors import (
    InvalidImport,
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
from engine.errors import EngineError

DEFAULT_LIMIT = 50  # presets per user; the config's [database] max_presets_per_user overrides it
NAME_MAX = 32
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")
NAME_RULE = "1-32 characters: letters a-z, digits, '-' and '_'"
EXPORT_FORMAT = "sdbot-presets"
EXPORT_VERSION = 1
MAX_IMPORT_CHARS = 1_000_000


@dataclass(frozen=True)
class SaveResult:
    preset: Preset
    created: bool  # False: an existing preset was updated


@dataclass(frozen=True)
class ImportResult:
    created: tuple[str, ...]
    updated: tuple[str, ...]
    default: str | None  # the preset made the default, if the file marked one


@dataclass(frozen=True)
class InfotextImport:
    preset: Preset
    created: bool
    unknown_keys: tuple[str, ...]  # infotext parameters sdbot cannot reproduce (hires fix, ...)
    dropped: tuple[str, ...]  # options read but deliberately not kept (the seed, unless asked for)
    notes: tuple[str, ...] = ()  # LoRAs/embeddings renamed to local files by hash, or missing here


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
    clean = _preset_options(options, limits)
    await ensure_user(s, user_id, lock=True)
    existing = await _locked(s, user_id, clean_name)
    if existing is not None:
        existing.name = clean_name
        existing.options = clean
        existing.updated_at = utcnow()
        await s.flush()
        return SaveResult(existing, created=False)
    await _check_room(s, user_id, 1, limit)
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
    result = await s.execute(sql_delete(DefaultPreset).where(DefaultPreset.user_id == user_id))
    return bool(result.rowcount)


# --- export / import -----------------------------------------------------------------------------------------


async def export_json(s: AsyncSession, user_id: int, only: Iterable[str] | None = None) -> str:
    """The user's presets (all, or those named in `only`) as a JSON document `import_json` reads back."""
    presets = await list_for_user(s, user_id)
    if only is not None:
        wanted = {name_key(n) for n in only}
        missing = wanted - {p.name_key for p in presets}
        if missing:
            raise PresetNotFound(f"you have no preset named {sorted(missing)[0]!r}")
        presets = [p for p in presets if p.name_key in wanted]
    default = await get_default(s, user_id)
    doc = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "presets": [
            {"name": p.name, "default": default is not None and p.id == default.id, "options": p.options}
            for p in presets
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)


async def import_json(
    s: AsyncSession,
    user_id: int,
    text: str | bytes,
    *,
    overwrite: bool = False,
    limit: int = DEFAULT_LIMIT,
    limits: Limits = Limits(),
) -> ImportResult:
    """Import an `export_json` document, all or nothing.

    Everything is checked before anything is written: the format, every name and every option (errors name the
    preset and the option), names repeated in the file, the limit. Without `overwrite`, a name the user already
    has raises `PresetExists` listing them; with it, those presets are replaced.
    """
    entries, default_name = _parse_export(text, limits)
    await ensure_user(s, user_id, lock=True)
    existing = {p.name_key: p for p in await list_for_user(s, user_id)}
    clashes = [name for name, _ in entries if name.lower() in existing]
    if clashes and not overwrite:
        shown = ", ".join(repr(existing[n.lower()].name) for n in clashes[:5])
        more = f" and {len(clashes) - 5} more" if len(clashes) > 5 else ""
        raise PresetExists(f"you already have presets named {shown}{more}; import with overwrite to replace them")
    await _check_room(s, user_id, len(entries) - len(clashes), limit)
    created: list[str] = []
    updated: list[str] = []
    now = utcnow()
    for name, options in entries:
        preset = existing.get(name.lower())
        if preset is None:
            s.add(Preset(user_id=user_id, name=name, name_key=name.lower(), options=options))
            created.append(name)
        else:
            preset.name, preset.options, preset.updated_at = name, options, now
            updated.append(name)
    await s.flush()
    if default_name is not None:
        await set_default(s, user_id, default_name)
    return ImportResult(tuple(created), tuple(updated), default_name)


def _parse_export(text: str | bytes, limits: Limits) -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidImport("the preset file is not UTF-8 text") from None
    if not isinstance(text, str):
        raise InvalidImport("the preset file must be text")
    if len(text) > MAX_IMPORT_CHARS:
        raise InvalidImport(f"the preset file is too large ({len(text)} characters; the limit is {MAX_IMPORT_CHARS})")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidImport(f"the preset file is not valid JSON ({_json_reason(exc)})") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT or not isinstance(doc.get("presets"), list):
        raise InvalidImport(
            f'not an sdbot preset export: expected {{"format": "{EXPORT_FORMAT}", "version": 1, "presets": [...]}}'
        )
    if doc.get("version") != EXPORT_VERSION:
        raise InvalidImport(f"preset export version {doc.get('version')!r} is not supported (expected 1)")
    entries: list[tuple[str, dict[str, Any]]] = []
    seen: dict[str, str] = {}
    default_name: str | None = None
    for index, item in enumerate(doc["presets"], start=1):
        if not isinstance(item, dict) or "name" not in item or "options" not in item:
            raise InvalidImport(f"preset #{index} in the file needs a 'name' and 'options'")
        try:
            name = validate_name(item["name"])
        except InvalidPresetName as exc:
            raise InvalidImport(f"preset #{index} in the file: {exc}") from None
        if name.lower() in seen:
            raise InvalidImport(f"the file holds two presets named {seen[name.lower()]!r} and {name!r}")
        seen[name.lower()] = name
        try:
            options = _preset_options(item["options"], limits)
        except InvalidOptions as exc:
            raise InvalidImport(f"preset {name!r} in the file: {exc}") from None
        if item.get("default") is True:
            if default_name is not None:
                raise InvalidImport(f"the file marks both {default_name!r} and {name!r} as the default")
            default_name = name
        entries.append((name, options))
    return entries, default_name


def _json_reason(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


async def import_infotext(
    s: AsyncSession,
    user_id: int,
    name: str,
    text: str,
    *,
    keep_seed: bool = False,
    limit: int = DEFAULT_LIMIT,
    limits: Limits = Limits(),
) -> InfotextImport:
    """Save (create or update) preset `name` from an A1111 infotext; see `infotext_options` for what is kept.

    Unknown infotext keys come back in `unknown_keys` for the caller to show; errors are `StoreError`s.
    """
    clean_name = validate_name(name)
    options, unknown, dropped = infotext_options(text, keep_seed=keep_seed, limits=limits)
    result = await save(s, user_id, clean_name, options, limit=limit, limits=limits)
    return InfotextImport(result.preset, result.created, unknown, dropped)


def infotext_options(
    text: Any, *, keep_seed: bool = False, limits: Limits = Limits()
) -> tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]:
    """Preset options from an A1111 infotext (engine's parser): `(options, unknown_keys, dropped)`. Pure.

    What is kept, and why:
    - the settings the parser maps to request options (steps, sampler and schedule, CFG, size, CLIP skip,
      model, VAE): that is what "use this image's settings" means;
    - the negative prompt, when the text has a "Negative prompt:" line: it is usually a reusable quality list;
    - the prompt, as the preset's `prompt` (not as `prompt_prefix`). During resolution a prompt typed in the
      command replaces it entirely, so the image's subject is never glued onto the user's own prompt; when the
      command gives no prompt, the preset reproduces the image. Users who want it as a prefix can re-save it.
    - the seed is dropped unless `keep_seed`: a fixed seed in a preset would make every later image with the
      same prompt identical, which is not what a preset is for. It is reported in `dropped`.
    Parameters the engine cannot reproduce (hires fix, ...) are returned in `unknown_keys`, never
    silently dropped. A text without an A1111 parameter line, or with a value that does not parse or is out of
    range, raises `InvalidImport` / `InvalidOptions` (both `StoreError`), never anything else.
    """
    from engine.infotext import parse_infotext, request_options

    if not isinstance(text, str):
        raise InvalidImport("an infotext must be text")
    if len(text) > MAX_IMPORT_CHARS:
        raise InvalidImport(f"the infotext is too long ({len(text)} characters; the limit is {MAX_IMPORT_CHARS})")
    try:
        info = parse_infotext(text)
        if not info.params:
            raise InvalidImport(
                "no A1111 parameter line found: the last line should look like "
                "'Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512'"
            )
        parsed, unknown = request_options(info)
    except EngineError as exc:
        raise InvalidImport(f"cannot import the infotext: {exc}") from None
    options = dict(parsed)
    if not options.get("prompt"):
        options.pop("prompt", None)
    if info.negative_prompt is None or not options.get("negative_prompt"):
        options.pop("negative_prompt", None)
    dropped: list[str] = []
    if not keep_seed and "seed" in options:
        options.pop("seed")
        dropped.append("seed")
    try:
        clean = _preset_options(options, limits)
    except InvalidOptions as exc:
        raise InvalidOptions(f"cannot import the infotext: {exc}") from None
    return clean, tuple(unknown), tuple(dropped)


# --- helpers -------------------------------------------------------------------------------------------------


def _preset_options(options: Any, limits: Limits) -> dict[str, Any]:
    clean = validate_options(options, limits=limits, what="preset option", allow_controls=True)
    if not clean:
        raise InvalidOptions("a preset needs at least one option")
    return clean


async def _locked(s: AsyncSession, user_id: int, name: str) -> Preset | None:
    return await find(s, user_id, name, for_update=True)


async def _check_room(s: AsyncSession, user_id: int, adding: int, limit: int) -> None:
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
