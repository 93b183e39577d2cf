"""The parameters embed and the info message: what made an image, for the result message, ℹ️ and /info.

Pure, within Discord's limits, and fed plain data (a job's options, sources and seed), so any area can show them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import discord

from bot.option_spec import BY_KEY, EngineError, strength_in_effect, tags_of

# The embed's inline fields, labelled as the vocabulary names them.
_FIELDS = tuple(
    (BY_KEY[key].label, key)
    for key in ("steps", "sampler", "cfg_scale", "seed", "size", "clip_skip", "vae", "model", "batch_size")
)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _value(key: str, options: Mapping[str, Any], seeds: list[int] | None) -> str:
    if key == "size":
        return f"{options['width']}x{options['height']}"
    if key == "sampler":
        schedule = options.get("schedule", "Automatic")
        return options["sampler"] if schedule == "Automatic" else f"{options['sampler']} ({schedule})"
    if key == "seed" and seeds:
        return ", ".join(str(s) for s in seeds) if len(seeds) <= 4 else f"{seeds[0]} … {seeds[-1]}"
    if key == "model":
        return options.get("model") or "default"
    value = options.get(key)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _source(key: str, sources: Mapping[str, str]) -> str | None:
    keys = ("width", "height") if key == "size" else (key,)
    found = [sources.get(k) for k in keys if sources.get(k) not in (None, "default")]
    return found[0] if found else None


def parameters_embed(
    job_id: int,
    options: Mapping[str, Any],
    sources: Mapping[str, str],
    seeds: list[int] | None = None,
    user: str | None = None,
) -> discord.Embed:
    """The parameters of a job, each with where it came from when not a default (Discord's embed limits kept)."""
    embed = discord.Embed(
        title=clip(f"Job #{job_id}", 256),
        description=clip(options.get("prompt", ""), 4096),
        colour=discord.Colour.blurple(),
    )
    if options.get("negative_prompt"):
        embed.add_field(name="Negative prompt", value=clip(options["negative_prompt"], 1024), inline=False)
    loras = loras_text(options.get("prompt", ""), options.get("negative_prompt", ""))
    if loras:
        embed.add_field(name="LoRAs", value=clip(loras, 1024), inline=False)
    for label, key in _FIELDS:
        if key == "batch_size" and options.get(key, 1) == 1:
            continue
        value = _value(key, options, seeds)
        source = _source(key, sources)
        text = f"{value}\n-# {source}" if source else value
        embed.add_field(name=label, value=clip(text, 1024), inline=True)
    for label, text in _second_pass_fields(options, sources):
        embed.add_field(name=label, value=clip(text, 1024), inline=True)
    if options.get("controls"):
        text = controls_text(options["controls"])
        source = sources.get("controls")
        embed.add_field(name="ControlNet", value=clip(f"{text}\n-# {source}" if source else text, 1024), inline=False)
    if user:
        embed.set_footer(text=clip(f"requested by {user}", 2048))
    return embed


def loras_text(prompt: str, negative: str) -> str:
    """The LoRAs a prompt's tags apply: "add_detail 0.6, style 1 (UNet 0.5)"."""
    try:
        tags = tags_of(prompt or "", negative or "")
    except EngineError:
        return ""
    return ", ".join(f"{t.name} {t.te:g}" + (f" (UNet {t.unet:g})" if t.unet != t.te else "") for t in tags)


def controls_text(units: Any) -> str:
    """One line per ControlNet unit: "canny · control_v11p_sd15_canny · weight 0.8 · steps 0-0.5 · prompt first"."""
    modes = {"My prompt is more important": "prompt first", "ControlNet is more important": "ControlNet first"}
    lines = []
    for unit in units:
        parts = [unit.get("module") or "none", unit.get("model") or "model by preprocessor"]
        parts.append(f"weight {unit.get('weight', 1.0):g}")
        start, end = unit.get("guidance_start", 0.0), unit.get("guidance_end", 1.0)
        if (start, end) != (0.0, 1.0):
            parts.append(f"steps {start:g}-{end:g}")
        if unit.get("control_mode") in modes:
            parts.append(modes[unit["control_mode"]])
        lines.append(" · ".join(parts))
    return "\n".join(lines)


def _second_pass_fields(options: Mapping[str, Any], sources: Mapping[str, str]) -> list[tuple[str, str]]:
    """Start image (its lineage: an attachment, or "Vary (subtle) of job #12, image 2"), mask, strength, Hires."""
    fields = []
    img2img = bool(options.get("init_image"))
    if img2img:
        fields.append(("Start image", sources.get("init_image") or "an image"))
    if options.get("mask") or options.get("outpaint"):
        border = f"outpaint {options['outpaint']} (L,T,R,B)" if options.get("outpaint") else "a mask"
        fields.append(("Mask", sources.get("mask") or border))
    hires = options.get("hires") or 0
    if img2img or hires > 1:
        strength = strength_in_effect(options.get("strength"), img2img=img2img, hires=hires)
        fields.append(("Strength", f"{strength:g}"))
    if hires > 1 and not img2img:
        steps = options.get("hires_steps") or options.get("steps")
        fields.append(("Hires", f"×{hires:g}, {options.get('hires_upscaler', 'Latent')}, {steps} steps"))
    return fields


def info_message(
    job_id: int, options: Mapping[str, Any], sources: Mapping[str, str] | None, seed: int | None, infotext: str | None
) -> dict[str, Any]:
    """ℹ️ and /info: the infotext (as A1111's PNG Info shows it) and the parameters embed."""
    embed = parameters_embed(job_id, options, sources or {}, [seed] if seed is not None else None)
    content = f"```\n{clip(infotext, 1900)}\n```" if infotext else "(the image files are gone)"
    return {"content": content, "embed": embed}
