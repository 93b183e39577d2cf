"""The option keys a preset, the guild defaults or a job may hold, and their validation.

Keys are exactly `GenerationRequest`'s field names plus `prompt_prefix` / `prompt_suffix`; values are plain JSON
types, each key's as the option vocabulary (`bot.option_spec`) says. Validation reuses the engine's own checks
(`GenerationRequest` construction) one option at a time, so a refused value gets a message that names the option
and says what is allowed, in the engine's words.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from bot.option_spec import BOOL, COMMAND_ONLY, CONTROLS, FLOAT, INT, STORED_KINDS, TEXT
from bot.store.errors import InvalidOptions
from engine.config import Limits
from engine.control.units import ControlUnit
from engine.errors import EngineError
from engine.request import NOT_OPTIONS, GenerationRequest
from engine.samplers import normalize_sampler

REQUEST_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(GenerationRequest) if f.name not in NOT_OPTIONS
)
PROMPT_PARTS: tuple[str, ...] = ("prompt_prefix", "prompt_suffix")
USER_FIELDS: tuple[str, ...] = tuple(f for f in REQUEST_FIELDS if f not in COMMAND_ONLY)
OPTION_KEYS: tuple[str, ...] = (*USER_FIELDS, *PROMPT_PARTS)


def validate_options(
    options: Any,
    *,
    limits: Limits = Limits(),
    what: str = "option",
    allow_prompt_parts: bool = True,
    allow_controls: bool = False,
) -> dict[str, Any]:
    """A checked, normalized copy of `options`, or `InvalidOptions` naming the first bad option.

    ControlNet units' settings (`controls`, without images) are kept only where `allow_controls` (presets).
    Normalization: the sampler is stored in its canonical spelling, and an old combined name ("DPM++ 2M
    Karras") is split into `sampler` + `schedule`; a float CFG that is whole stays a float; `None` values are
    dropped (they mean "not set").
    """
    if not isinstance(options, Mapping):
        raise InvalidOptions(f"{what}s must be a mapping of option names to values")
    allowed = OPTION_KEYS if allow_prompt_parts else USER_FIELDS
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key not in allowed or (key == "controls" and not allow_controls):
            shown = [k for k in allowed if k != "controls" or allow_controls]
            raise InvalidOptions(f"unknown {what} {key!r}; allowed: {', '.join(shown)}")
        if value is None:
            continue
        out[key] = _check_value(key, value, limits, what)
    if "sampler" in out or "schedule" in out:
        sampler = out.get("sampler", "Euler a")
        try:
            name, schedule = normalize_sampler(sampler, out.get("schedule", "Automatic"))
        except EngineError as exc:
            raise InvalidOptions(f"invalid {what} sampler: {exc}") from None
        if "sampler" in out:
            out["sampler"] = name
            if "schedule" in out or schedule != "Automatic":
                out["schedule"] = schedule
        else:
            out["schedule"] = schedule
    if "width" in out and "height" in out:
        try:
            GenerationRequest(prompt="", width=out["width"], height=out["height"], limits=limits)
        except EngineError as exc:
            raise InvalidOptions(f"invalid {what} width/height: {exc}") from None
    return out


def _check_value(key: str, value: Any, limits: Limits, what: str) -> Any:
    kind = STORED_KINDS[key]
    if kind == CONTROLS:
        return _check_controls(value, what)
    if kind == TEXT and not isinstance(value, str):
        raise InvalidOptions(f"{what} {key} must be text (got {type(value).__name__})")
    if kind == BOOL and not isinstance(value, bool):
        raise InvalidOptions(f"{what} {key} must be true or false (got {value!r})")
    if kind == INT and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidOptions(f"{what} {key} must be a whole number (got {value!r})")
    if kind == FLOAT:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidOptions(f"{what} {key} must be a number (got {value!r})")
        value = float(value)
    if key in PROMPT_PARTS:
        if len(value) > limits.max_prompt_chars:
            raise InvalidOptions(
                f"{what} {key} is {len(value)} characters long; the limit is {limits.max_prompt_chars}"
            )
        return value
    if key in ("sampler", "schedule"):
        return value  # checked together in validate_options
    probe = {"prompt": "", key: value}
    if key == "hires":  # the scale alone: whether the final size fits is checked with the job's size
        probe.update(width=64, height=64)
    try:
        GenerationRequest(**probe, limits=limits)
    except EngineError as exc:
        raise InvalidOptions(f"invalid {what} {key}: {exc}") from None
    return value


def _check_controls(value: Any, what: str) -> list[dict[str, Any]]:
    """ControlNet units' settings (module, model, weight ...) as a preset keeps them: without images, which come
    with each command (a stored path could name any file), checked by the engine and stored as plain mappings."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(unit, Mapping) for unit in value):
        raise InvalidOptions(f"{what} controls must be a list of ControlNet units' settings")
    units = []
    for index, settings in enumerate(value, start=1):
        if settings.get("image") or settings.get("image_data"):
            raise InvalidOptions(f"{what} controls: unit {index} names an image; the image comes with each command")
        try:
            units.append(ControlUnit(**{k: v for k, v in settings.items() if k not in ("image", "image_data")}))
        except EngineError as exc:
            raise InvalidOptions(f"invalid {what} controls: unit {index}: {exc}") from None
        except TypeError:
            raise InvalidOptions(f"invalid {what} controls: unit {index} has an unknown setting") from None
    return [unit.options() for unit in units]
