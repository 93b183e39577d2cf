"""Preset text for Discord: one line per preset, options in the inline syntax users type. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.exts.common.formatting import clip, controls_text
from bot.option_spec import inline_text

PART_LIMIT = 300  # characters of a prompt part shown; /preset export has the full text


def describe_options(options: Mapping[str, Any]) -> str:
    """A preset's options as `--steps 30 --cfg 7 …` plus its prompt parts (quoted, long ones clipped), for lists
    and /preset show."""
    parts: list[str] = []
    for key, label in (
        ("prompt", "prompt"),
        ("prompt_prefix", "prefix"),
        ("prompt_suffix", "suffix"),
        ("negative_prompt", "no"),
    ):
        if options.get(key):
            parts.append(f"{label}: “{clip(options[key], PART_LIMIT)}”")
    parts.append(inline_text({**options, "negative_prompt": None}))
    if options.get("controls"):  # ControlNet units: their settings (an image comes with each command)
        parts.append("ControlNet: " + "; ".join(controls_text(options["controls"]).splitlines()))
    return " ".join(p for p in parts if p) or "(no options)"


def preset_lines(presets: list[tuple[str, Mapping[str, Any]]], default: str | None, limit: int = 1900) -> str:
    lines = []
    for name, options in presets:
        mark = " ⭐ default" if default is not None and name.lower() == default.lower() else ""
        lines.append(f"**{name}**{mark}: {describe_options(options)}")
    text = "\n".join(lines)
    if len(text) > limit:
        text = text[: limit - 40].rsplit("\n", 1)[0] + "\n… (use /preset export for all of them)"
    return text
