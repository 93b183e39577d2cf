"""Suggestions while a member types an option of /imagine or /xyz: sampler names, sizes, and what is installed
(the catalog's snapshot, never the disk), presets by prefix, and the X/Y/Z axis types."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord import app_commands

from bot.option_spec import sampler_labels
from bot.services.xyz.axes import NOTHING, TYPES

SIZES = ["512x512", "512x768", "768x512", "640x640", "768x768", "832x1216", "1216x832", "1024x1024"]
AXIS_EXAMPLES = {
    "Seed": "1-4",
    "Steps": "10, 20, 30",
    "CFG Scale": "5-9 (+2)",
    "Prompt S/R": "cat, dog, fox",
    "Sampler": "Euler a, DPM++ 2M Karras",
    "Clip skip": "1, 2",
    "Denoising": "0.3-0.7 [3]",
    "Hires steps": "5, 10",
    "LoRA weight": "0-1 [5]",
}

Choices = list[app_commands.Choice[str]]
RESIZE_MODES = [  # not typed: chosen (A1111's names)
    app_commands.Choice(name="Just resize", value="just"),
    app_commands.Choice(name="Crop and resize", value="crop"),
    app_commands.Choice(name="Resize and fill", value="fill"),
]


def choices(values: list[str], current: str) -> Choices:
    """Up to 25 values: those starting with what was typed, then those containing it."""
    current = current.lower()
    ranked = [v for v in values if v.lower().startswith(current)] + [
        v for v in values if current in v.lower() and not v.lower().startswith(current)
    ]
    return [app_commands.Choice(name=v[:100], value=v[:100]) for v in ranked[:25]]


def _services(interaction: discord.Interaction) -> Any:
    client: Any = interaction.client  # the SdBot, which carries the services
    return client.services


def _catalog(field: str) -> Callable[[discord.Interaction, str], Awaitable[Choices]]:
    async def suggest(interaction: discord.Interaction, current: str) -> Choices:
        catalog = await _services(interaction).catalog.current()
        values = getattr(catalog, field)
        return choices([getattr(v, "name", v) for v in values], current)

    return suggest


async def samplers(interaction: discord.Interaction, current: str) -> Choices:
    return choices(sampler_labels(), current)


async def sizes(interaction: discord.Interaction, current: str) -> Choices:
    return choices(SIZES, current)


async def vaes(interaction: discord.Interaction, current: str) -> Choices:
    catalog = await _services(interaction).catalog.current()
    return choices(["auto", "none", *catalog.vaes], current)


async def presets(interaction: discord.Interaction, current: str) -> Choices:
    names = await _services(interaction).presets.names(interaction.user.id, current)
    return choices(names, current)


async def axes(interaction: discord.Interaction, current: str) -> Choices:
    """The axis types with an example while no type is typed; what was typed, as it is, after it."""
    if ":" in current:
        return [app_commands.Choice(name=current[:100], value=current[:100])]
    labels = [t.label for t in TYPES if t is not NOTHING]
    return [
        app_commands.Choice(name=f"{label}: {AXIS_EXAMPLES.get(label, '')}"[:100], value=f"{label}: ")
        for label in labels
        if current.lower() in label.lower()
    ][:25]


async def controlnets(interaction: discord.Interaction, current: str) -> Choices:
    catalog = await _services(interaction).catalog.current()
    return choices([c.name for c in catalog.controlnets if not c.problem], current)


AUTOCOMPLETE: dict[str, Any] = dict(
    sampler=samplers,
    size=sizes,
    vae=vaes,
    model=_catalog("checkpoints"),
    lora=_catalog("loras"),
    hires_upscaler=_catalog("upscalers"),
    preset=presets,
)
CONTROL_AUTOCOMPLETE: dict[str, Any] = dict(control_model=controlnets, control_module=_catalog("preprocessors"))
