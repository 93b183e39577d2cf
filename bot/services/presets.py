"""Presets and option resolution for commands: the store's preset functions in transactions, plus
`resolve_command`, which turns what a user typed into a validated `GenerationRequest` and its sources."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.errors import UserError
from bot.option_spec import COMMAND_ONLY
from bot.options import sized_by_ratio
from bot.services.preset_infotext import InfotextImport, import_infotext
from bot.services.resolution import Caps, resolve
from bot.store import guilds as guild_store
from bot.store import preset_export
from bot.store import presets as preset_store
from bot.store.db import transaction
from bot.store.models import GuildSettings, Preset
from engine.config import Limits
from engine.request import GenerationRequest


@dataclass(frozen=True)
class CommandRequest:
    request: GenerationRequest
    sources: dict[str, str]


@dataclass
class PresetService:
    sessions: async_sessionmaker[AsyncSession]
    limits: Limits = Limits()
    max_per_user: int = 50
    # infotext -> (infotext with LoRAs/embeddings renamed to local files by hash, notes): engine.networks.hash_import
    relink: Callable[[str], tuple[str, list[str]]] | None = None

    async def resolve_command(
        self, user_id: int, guild_id: int | None, preset_names: list[str], typed: Mapping[str, Any]
    ) -> CommandRequest:
        """`resolve_in` in a transaction of its own (the submission pipeline calls it inside its own)."""

        async def load(s: AsyncSession) -> CommandRequest:
            settings = await guild_store.get(s, guild_id) if guild_id is not None else None
            return await resolve_in(s, settings, user_id, preset_names, typed, self.limits)

        return await transaction(self.sessions, load)

    async def save(self, user_id: int, name: str, options: Mapping[str, Any]) -> preset_store.SaveResult:
        return await transaction(
            self.sessions, preset_store.save, user_id, name, options, limit=self.max_per_user, limits=self.limits
        )

    async def save_from_job(self, user_id: int, name: str, request: Mapping[str, Any]) -> preset_store.SaveResult:
        """A preset of a job's options (💾 Save as preset)."""
        return await self.save(user_id, name, presettable(request))

    async def get(self, user_id: int, name: str) -> Preset:
        return await transaction(self.sessions, preset_store.get, user_id, name)

    async def list_with_default(self, user_id: int) -> tuple[list[Preset], str | None]:
        """The user's presets and the name of their default one (None when unset)."""

        async def load(s: AsyncSession) -> tuple[list[Preset], str | None]:
            default = await preset_store.get_default(s, user_id)
            return await preset_store.list_for_user(s, user_id), default.name if default else None

        return await transaction(self.sessions, load)

    async def names(self, user_id: int, prefix: str) -> list[str]:
        return await transaction(self.sessions, preset_store.names, user_id, prefix, 25)

    async def rename(self, user_id: int, old: str, new: str) -> Preset:
        return await transaction(self.sessions, preset_store.rename, user_id, old, new)

    async def delete(self, user_id: int, name: str) -> None:
        await transaction(self.sessions, preset_store.delete, user_id, name)

    async def set_default(self, user_id: int, name: str) -> Preset:
        return await transaction(self.sessions, preset_store.set_default, user_id, name)

    async def clear_default(self, user_id: int) -> bool:
        return await transaction(self.sessions, preset_store.clear_default, user_id)

    async def import_infotext(self, user_id: int, name: str, text: str) -> InfotextImport:
        notes: list[str] = []
        if self.relink is not None:  # hashing local files reads them: not on the event loop
            text, notes = await asyncio.to_thread(self.relink, text)
        result = await transaction(
            self.sessions,
            import_infotext,
            user_id,
            name,
            text,
            limit=self.max_per_user,
            limits=self.limits,
        )
        return dataclasses.replace(result, notes=tuple(notes))

    async def import_json(self, user_id: int, text: str | bytes) -> preset_export.ImportResult:
        return await transaction(
            self.sessions, preset_export.import_json, user_id, text, overwrite=True, limit=self.max_per_user
        )

    async def export_json(self, user_id: int) -> str:
        return await transaction(self.sessions, preset_export.export_json, user_id)


def presettable(request: Mapping[str, Any]) -> dict[str, Any]:
    """A job's options as a preset may hold them: without its seed and the files that come with each command
    (start image, mask, outpaint); its ControlNet units keep their settings, not their images."""
    keep = {k: v for k, v in request.items() if k != "seed" and k not in COMMAND_ONLY}
    if keep.get("controls"):
        keep["controls"] = [{k: v for k, v in unit.items() if k != "image"} for unit in keep["controls"]]
    return keep


async def resolve_in(
    s: AsyncSession,
    settings: GuildSettings | None,
    user_id: int,
    preset_names: Sequence[str],
    typed: Mapping[str, Any],
    limits: Limits,
) -> CommandRequest:
    """guild defaults < default preset < named presets < typed options; then guild caps (storage issue)."""
    with_ratio = {k: v for k, v in typed.items() if v is not None}
    typed = {k: v for k, v in with_ratio.items() if k != "aspect_ratio"}
    default = await preset_store.get_default(s, user_id)
    named = [await preset_store.get(s, user_id, name) for name in preset_names]
    resolve_layers = functools.partial(
        resolve,
        guild_defaults=settings.defaults if settings else None,
        default_preset=(default.name, default.options) if default else None,
        presets=[(p.name, p.options) for p in named],
        caps=Caps.of(settings) if settings else None,
        forced_negative=settings.forced_negative_prompt if settings else "",
    )
    resolved = resolve_layers(typed=typed)
    sized = sized_by_ratio(with_ratio, (resolved.options["width"], resolved.options["height"]))
    if sized != typed:  # --ar: the size it gives, at the area the layers below would give
        resolved = resolve_layers(typed=sized)
    if not resolved.options["prompt"]:
        raise UserError("the prompt is empty: type what to draw, e.g. /imagine prompt: a cat in a hat")
    if settings is not None:
        check_allowed("model", resolved.options["model"], settings.allowed_models)
        check_allowed("VAE", resolved.options["vae"], settings.allowed_vaes, always=("auto", "none"))
    return CommandRequest(resolved.request(limits), dict(resolved.sources))


def check_allowed(what: str, value: str, allowed: list[str], always: tuple[str, ...] = ("",)) -> None:
    """A model or VAE the guild allows (an empty list allows all), or a user error listing those it does."""
    if not allowed or value in always or value.lower() in {a.lower() for a in allowed}:
        return
    raise UserError(f"this server allows only these {what}s: {', '.join(allowed)} (got {value!r})")
