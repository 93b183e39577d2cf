"""Option resolution: which value each generation option gets, and where it came from. Pure: no IO, no state.

Layers, lowest first; a later layer replaces an earlier one key by key (`None` means "not set"):

    GenerationRequest defaults  ("default")
    < guild defaults            ("guild")
    < the user's default preset ("preset default:<name>")
    < named presets, in the order the user gave them ("preset <name>")
    < options typed in the command ("command")

Then the guild's caps clamp steps, size and batch ("guild cap"), and the guild's forced negative prompt is
appended to whatever negative prompt won ("forced").

Details a Midjourney-style user would otherwise trip over:
- `prompt_prefix` and `prompt_suffix` are layered like any other option, then wrapped around the prompt:
  prefix + ", " + prompt + ", " + suffix, leaving out empty parts (and stray commas at their edges), so a
  style preset adds its words around what the user typed. They are not stacked across presets: like every
  option, the last layer that sets one wins, which `sources` shows.
- ControlNet units (`controls`) merge unit by unit, setting by setting, a higher layer's setting winning: a
  preset imported from an infotext holds its units' settings (module, model, weight …) but never an image, and a
  command that attaches a control image (and maybe a module) completes them. A unit still without an image takes
  the first image any unit has: one attachment serves all of a preset's units.
- `sampler` and `schedule` are one choice: a layer that sets a sampler without a schedule also resets the
  schedule to "Automatic" (an old combined name such as "DPM++ 2M Karras" then still carries its schedule, as
  `GenerationRequest` reads it). Otherwise a schedule from a lower layer could silently change, or make invalid,
  the sampler someone typed.

Why caps clamp instead of refusing: a capped value usually did not come from the person pressing enter. It may
come from a preset made in a guild with looser caps, or from the user's default preset, and refusing would make
those presets unusable here with no fix but editing them. Clamping keeps the command working, and the result
says "guild cap" for every clamped value, so the bot can show what was reduced and why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from bot.store.options import COMMAND_ONLY, OPTION_KEYS, REQUEST_FIELDS
from engine.config import Limits
from engine.request import MIN_SIDE, GenerationRequest

DEFAULT = "default"
GUILD = "guild"
COMMAND = "command"
CAP = "guild cap"
FORCED = "forced"

# GenerationRequest's defaults, normalized (its default sampler "DPM++ 2M Karras" becomes "DPM++ 2M" + "Karras").
_REQUEST_DEFAULTS: dict[str, Any] = GenerationRequest(prompt="").options()


@dataclass(frozen=True)
class Caps:
    """A guild's caps on one request; None: no cap beyond the engine's own limits."""

    max_steps: int | None = None
    max_pixels: int | None = None
    max_batch: int | None = None

    @classmethod
    def of(cls, settings: Any) -> Caps:
        """From anything with `max_steps` / `max_pixels` / `max_batch` attributes (e.g. a GuildSettings row)."""
        return cls(*(getattr(settings, name, None) for name in ("max_steps", "max_pixels", "max_batch")))


@dataclass(frozen=True)
class Resolved:
    """The merged options (every `GenerationRequest` field; the prompt already combined with prefix/suffix)
    and, for each of them plus `prompt_prefix`/`prompt_suffix` when used, where the value came from."""

    options: Mapping[str, Any] = field(hash=False)
    sources: Mapping[str, str] = field(hash=False)

    def request(self, limits: Limits = Limits()) -> GenerationRequest:
        """The validated request (`EngineError` with a user-readable message when a value is not allowed)."""
        return GenerationRequest(**self.options, limits=limits)


def resolve(
    guild_defaults: Mapping[str, Any] | None,
    default_preset: tuple[str, Mapping[str, Any]] | Mapping[str, Any] | None,
    presets: Sequence[tuple[str, Mapping[str, Any]]],
    typed: Mapping[str, Any] | None,
    caps: Caps | None = None,
    forced_negative: str = "",
) -> Resolved:
    """Merge the layers (see the module docstring) and apply the guild's caps and forced negative prompt.

    `default_preset` is `(name, options)` (or bare options, shown as "preset default"). Unknown option keys
    are a programming error (`ValueError`): every layer was validated where it was saved or typed.
    """
    layers: list[tuple[str, Mapping[str, Any] | None]] = [(GUILD, guild_defaults)]
    if isinstance(default_preset, tuple):
        layers.append((f"preset default:{default_preset[0]}", default_preset[1]))
    else:
        layers.append(("preset default", default_preset))
    layers += [(f"preset {name}", options) for name, options in presets]
    layers.append((COMMAND, typed))

    values: dict[str, Any] = dict(_REQUEST_DEFAULTS)
    sources: dict[str, str] = dict.fromkeys(REQUEST_FIELDS, DEFAULT)
    for label, layer in layers:
        options = layer or {}
        for key, value in options.items():
            if key not in OPTION_KEYS and not (label == COMMAND and key in COMMAND_ONLY):
                raise ValueError(f"unknown option {key!r} in {label}")
            if value is None:
                continue
            if key == "controls":
                value = merge_units(values.get("controls") or [], value)
            values[key], sources[key] = value, label
            if key == "sampler" and options.get("schedule") is None:
                values["schedule"], sources["schedule"] = "Automatic", label

    values["controls"] = with_images(values.get("controls") or [])
    prefix, suffix = values.pop("prompt_prefix", ""), values.pop("prompt_suffix", "")
    values["prompt"] = join_prompt(prefix, values["prompt"], suffix)
    _apply_caps(values, sources, caps or Caps())
    forced = _clean(forced_negative or "")
    if forced and forced not in values["negative_prompt"]:
        had = _clean(values["negative_prompt"])
        values["negative_prompt"] = join_prompt(had, forced)
        sources["negative_prompt"] = f"{sources['negative_prompt']} + {FORCED}" if had else FORCED
    return Resolved(MappingProxyType(values), MappingProxyType(sources))


def merge_units(lower: Sequence[Mapping[str, Any]], higher: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """ControlNet units' settings merged index by index: each of `higher`'s settings replaces `lower`'s."""
    return [
        {**(lower[i] if i < len(lower) else {}), **(higher[i] if i < len(higher) else {})}
        for i in range(max(len(lower), len(higher)))
    ]


def with_images(units: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Units without an image given the first image a unit has (none has one: left as they are)."""
    image = next((u["image"] for u in units if u.get("image")), "")
    return [{**u, "image": u.get("image") or image} if image else dict(u) for u in units]


def join_prompt(*parts: Any) -> str:
    """Non-empty parts joined with ", ", each without surrounding whitespace or edge commas."""
    return ", ".join(p for p in (_clean(x) for x in parts) if p)


def _clean(part: Any) -> str:
    return part.strip().strip(",").strip() if isinstance(part, str) else ""


def _apply_caps(values: dict[str, Any], sources: dict[str, str], caps: Caps) -> None:
    for key, cap in (("steps", caps.max_steps), ("batch_size", caps.max_batch)):
        if cap is not None and _is_int(values[key]) and values[key] > cap:
            values[key], sources[key] = cap, CAP
    width, height = values["width"], values["height"]
    if caps.max_pixels is not None and _is_int(width) and _is_int(height) and width > 0 and height > 0:
        # Hires. fix: the cap is on the final size, so the base size is fitted to max_pixels / scale².
        scale = _hires_scale(values)
        if width * height * scale * scale > caps.max_pixels:
            values["width"], values["height"] = fit_pixels(width, height, int(caps.max_pixels / (scale * scale)))
            sources["width"] = sources["height"] = CAP


def _hires_scale(values: dict[str, Any]) -> float:
    scale = values.get("hires")
    if values.get("init_image") or isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 1:
        return 1.0
    return float(scale)


def fit_pixels(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The largest size with the same aspect ratio, sides multiples of 8 (at least 64), within `max_pixels`."""
    scale = math.sqrt(max_pixels / (width * height))
    w = max(MIN_SIDE, int(width * scale) // 8 * 8)
    h = max(MIN_SIDE, int(height * scale) // 8 * 8)
    while w * h > max_pixels and (w > MIN_SIDE or h > MIN_SIDE):  # only when a side hit the minimum
        if w >= h and w > MIN_SIDE:
            w -= 8
        else:
            h -= 8
    return w, h


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
