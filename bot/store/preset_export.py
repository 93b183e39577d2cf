"""The preset file: a user's presets as a JSON document (`/preset export`), and importing one, all or nothing.

    {"format": "sdbot-presets", "version": 1, "presets": [{"name": ..., "default": true|false, "options": {...}}]}

Every option in a file is validated as a saved preset's is, so a file cannot hold what `/preset save` refuses.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.store import presets as preset_store
from bot.store.errors import InvalidImport, InvalidOptions, InvalidPresetName, PresetExists, PresetNotFound
from bot.store.models import Preset, utcnow
from bot.store.users import ensure_user
from engine.config import Limits

EXPORT_FORMAT = "sdbot-presets"
EXPORT_VERSION = 1
MAX_IMPORT_CHARS = 1_000_000


@dataclass(frozen=True)
class ImportResult:
    created: tuple[str, ...]
    updated: tuple[str, ...]
    default: str | None  # the preset made the default, if the file marked one


async def export_json(s: AsyncSession, user_id: int, only: Iterable[str] | None = None) -> str:
    """The user's presets (all, or those named in `only`) as a JSON document `import_json` reads back."""
    presets = await preset_store.list_for_user(s, user_id)
    if only is not None:
        wanted = {preset_store.name_key(n) for n in only}
        missing = wanted - {p.name_key for p in presets}
        if missing:
            raise PresetNotFound(f"you have no preset named {sorted(missing)[0]!r}")
        presets = [p for p in presets if p.name_key in wanted]
    default = await preset_store.get_default(s, user_id)
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
    limit: int = preset_store.DEFAULT_LIMIT,
    limits: Limits = Limits(),
) -> ImportResult:
    """Import an `export_json` document, all or nothing.

    Everything is checked before anything is written: the format, every name and every option (errors name the
    preset and the option), names repeated in the file, the limit. Without `overwrite`, a name the user already
    has raises `PresetExists` listing them; with it, those presets are replaced.
    """
    entries, default_name = _parse_export(text, limits)
    await ensure_user(s, user_id, lock=True)
    existing = {p.name_key: p for p in await preset_store.list_for_user(s, user_id)}
    clashes = [name for name, _ in entries if name.lower() in existing]
    if clashes and not overwrite:
        shown = ", ".join(repr(existing[n.lower()].name) for n in clashes[:5])
        more = f" and {len(clashes) - 5} more" if len(clashes) > 5 else ""
        raise PresetExists(f"you already have presets named {shown}{more}; import with overwrite to replace them")
    await preset_store.check_room(s, user_id, len(entries) - len(clashes), limit)
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
        await preset_store.set_default(s, user_id, default_name)
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
            name = preset_store.validate_name(item["name"])
        except InvalidPresetName as exc:
            raise InvalidImport(f"preset #{index} in the file: {exc}") from None
        if name.lower() in seen:
            raise InvalidImport(f"the file holds two presets named {seen[name.lower()]!r} and {name!r}")
        seen[name.lower()] = name
        try:
            options = preset_store.preset_options(item["options"], limits)
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
