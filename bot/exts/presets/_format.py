"""Preset text for Discord: one line per preset, options in the inline syntax users type. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PART_LIMIT = 300  # characters of a prompt part shown; /preset export has the full text
_INLINE = (("steps", "steps"), ("cfg_scale", "cfg"), ("seed", "seed"), ("clip_skip", "clip-skip"),
           ("vae", "vae"), ("model", "model"), ("batch_size", "batch"), ("strength", "strength"),
           ("resize_mode", "resize-mode"), ("hires", "hires"), ("hires_steps", "hires-steps"),
           ("hires_upscaler", "hires-upscaler"))


def describe_options(options: Mapping[str, Any]) -> str:
    """A preset's options as `--steps 30 --cfg 7 …` plus its prompt parts (quoted, long ones clipped), for lists
    and /preset show."""
    parts: list[str] = []
    for key, label in (("prompt", "prompt"), ("prompt_prefix", "prefix"), ("prompt_suffix", "suffix"),
                       ("negative_prompt", "no")):
        if options.get(key):
            parts.append(f"{label}: “{clip(options[key], PART_LIMIT)}”")
    if "sampler" in options:
        schedule = options.get("schedule", "Automatic")
        parts.append(f"--sampler {options['sampler']}" + ("" if schedule == "Automatic" else f" {schedule}"))
    elif "schedule" in options:
        parts.append(f"--schedule {options['schedule']}")
    if "width" in options or "height" in options:
        parts.append(f"--size {options.get('width', '?')}x{options.get('height', '?')}")
    for key, label in _INLINE:
        if key in options:
            value = options[key]
            parts.append(f"--{label} {value:g}" if isinstance(value, float) else f"--{label} {value}")
    return " ".join(parts) or "(no options)"


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def preset_lines(presets: list[tuple[str, Mapping[str, Any]]], default: str | None, limit: int = 1900) -> str:
    lines = []
    for name, options in presets:
        mark = " ⭐ default" if default is not None and name.lower() == default.lower() else ""
        lines.append(f"**{name}**{mark}: {describe_options(options)}")
    text = "\n".join(lines)
    if len(text) > limit:
        text = text[: limit - 40].rsplit("\n", 1)[0] + "\n… (use /preset export for all of them)"
    return text
