"""What of an A1111 infotext becomes a preset (`/preset import`), and why: a policy over the engine's parser.

The prompt, negative prompt and settings are kept; the seed is dropped unless asked for; parameters sdbot does
not reproduce are reported to the user rather than silently lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.store import presets as preset_store
from bot.store.errors import InvalidImport, InvalidOptions
from bot.store.models import Preset
from bot.store.preset_export import MAX_IMPORT_CHARS
from engine.config import Limits
from engine.errors import EngineError
from engine.infotext import parse_infotext, request_options


@dataclass(frozen=True)
class InfotextImport:
    preset: Preset
    created: bool
    unknown_keys: tuple[str, ...]  # infotext parameters sdbot does not reproduce (face restoration, ...)
    dropped: tuple[str, ...]  # options read but deliberately not kept (the seed, unless asked for)
    notes: tuple[str, ...] = ()  # LoRAs/embeddings renamed to local files by hash, or missing here


async def import_infotext(
    s: AsyncSession,
    user_id: int,
    name: str,
    text: str,
    *,
    keep_seed: bool = False,
    limit: int = preset_store.DEFAULT_LIMIT,
    limits: Limits = Limits(),
) -> InfotextImport:
    """Save (create or update) preset `name` from an A1111 infotext; see `infotext_options` for what is kept.

    Unknown infotext keys come back in `unknown_keys` for the caller to show; errors are `StoreError`s.
    """
    clean_name = preset_store.validate_name(name)
    options, unknown, dropped = infotext_options(text, keep_seed=keep_seed, limits=limits)
    result = await preset_store.save(s, user_id, clean_name, options, limit=limit, limits=limits)
    return InfotextImport(result.preset, result.created, unknown, dropped)


def infotext_options(
    text: Any, *, keep_seed: bool = False, limits: Limits = Limits()
) -> tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]:
    """Preset options from an A1111 infotext (engine's parser): `(options, unknown_keys, dropped)`. Pure.

    What is kept, and why:
    - the settings the parser maps to request options (steps, sampler and schedule, CFG, size, CLIP skip,
      model, VAE, denoising strength, Hires fix): that is what "use this image's settings" means;
    - the negative prompt, when the text has a "Negative prompt:" line: it is usually a reusable quality list;
    - the prompt, as the preset's `prompt` (not as `prompt_prefix`). During resolution a prompt typed in the
      command replaces it entirely, so the image's subject is never glued onto the user's own prompt; when the
      command gives no prompt, the preset reproduces the image. Users who want it as a prefix can re-save it.
    - the seed is dropped unless `keep_seed`: a fixed seed in a preset would make every later image with the
      same prompt identical, which is not what a preset is for. It is reported in `dropped`.
    Parameters sdbot does not reproduce (face restoration, an extension's keys, ...) are returned in
    `unknown_keys`, never silently dropped. A text without an A1111 parameter line, or with a value that does
    not parse or is out of range, raises `InvalidImport` / `InvalidOptions` (both `StoreError`), never anything
    else.
    """
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
        clean = preset_store.preset_options(options, limits)
    except InvalidOptions as exc:
        raise InvalidOptions(f"cannot import the infotext: {exc}") from None
    return clean, tuple(unknown), tuple(dropped)
