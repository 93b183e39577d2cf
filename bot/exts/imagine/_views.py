"""Buttons under each result and the modals they open. Persistent: the custom id carries the job id and the
action (`sdbot:job:<id>:<action>`), the state lives in the database, so they work after a restart."""

from __future__ import annotations

import re
from typing import Any

import discord

from bot.app import admit, reply_error

ACTIONS = {
    "reroll": ("🎲", "Re-roll", discord.ButtonStyle.primary),
    "edit": ("✏️", "Edit", discord.ButtonStyle.secondary),
    "save": ("💾", "Save preset", discord.ButtonStyle.secondary),
    "info": ("ℹ️", "Info", discord.ButtonStyle.secondary),
    "delete": ("🗑️", "Delete", discord.ButtonStyle.danger),
}


def custom_id(job_id: int, action: str) -> str:
    return f"sdbot:job:{job_id}:{action}"


class JobButton(discord.ui.DynamicItem[discord.ui.Button], template=r"sdbot:job:(?P<job>[0-9]{1,19}):(?P<action>[a-z]+)"):
    def __init__(self, job_id: int, action: str) -> None:
        emoji, label, style = ACTIONS[action]
        super().__init__(discord.ui.Button(emoji=emoji, label=label, style=style,
                                           custom_id=custom_id(job_id, action)))
        self.job_id = job_id
        self.action = action

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> "JobButton":
        action = match["action"]
        if action not in ACTIONS:
            raise ValueError(f"unknown job action {action!r}")
        return cls(int(match["job"]), action)

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await admit(interaction)  # banned users get one clear message

    async def callback(self, interaction: discord.Interaction) -> Any:
        cog = interaction.client.get_cog("Imagine")
        try:
            await cog.on_job_button(interaction, self.job_id, self.action)
        except Exception as exc:  # noqa: BLE001 - every error becomes a reply, none a silent failure
            await reply_error(interaction, exc)


def job_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action in ACTIONS:
        view.add_item(JobButton(job_id, action))
    return view


class _Modal(discord.ui.Modal):
    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        await reply_error(interaction, error)


class EditModal(_Modal, title="Edit and run again"):
    """Prefilled with the job's prompt and options; submitted through the same parser as /imagine."""

    def __init__(self, job_id: int, prompt: str, negative: str, options: str, on_submit) -> None:
        super().__init__(custom_id=f"sdbot:edit:{job_id}")
        self.prompt = discord.ui.TextInput(label="Prompt", style=discord.TextStyle.paragraph, default=prompt[:4000],
                                           max_length=4000, custom_id="prompt")
        self.negative = discord.ui.TextInput(label="Negative prompt", style=discord.TextStyle.paragraph,
                                             default=negative[:4000], required=False, max_length=4000,
                                             custom_id="negative")
        self.options = discord.ui.TextInput(label="Options", default=options[:4000], required=False,
                                            max_length=4000, custom_id="options",
                                            placeholder="--steps 30 --cfg 7 --sampler Euler a --seed 5")
        for item in (self.prompt, self.negative, self.options):
            self.add_item(item)
        self._on_submit = on_submit

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self._on_submit(interaction, self.prompt.value, self.negative.value, self.options.value)


class SavePresetModal(_Modal, title="Save as preset"):
    def __init__(self, job_id: int, on_submit) -> None:
        super().__init__(custom_id=f"sdbot:save:{job_id}")
        self.name = discord.ui.TextInput(label="Preset name", min_length=1, max_length=32, custom_id="name",
                                         placeholder="letters, digits, - and _")
        self.add_item(self.name)
        self._on_submit = on_submit

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self._on_submit(interaction, self.name.value)
