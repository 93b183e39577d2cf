"""Buttons under each result and the modals they open. Persistent: the custom id carries the job id and the
action (`sdbot:job:<id>:<action>`), the state lives in the database, so they work after a restart."""

from __future__ import annotations

import re
from typing import Any

import discord

from bot.errors import UserError
from bot.exts.common.interactions import admit, reply_error
from bot.exts.common.views import ActionButton, ReplyingModal, dispatch

ACTIONS = {
    "reroll": ("🎲", "Re-roll", discord.ButtonStyle.primary),
    "edit": ("✏️", "Edit", discord.ButtonStyle.secondary),
    "save": ("💾", "Save preset", discord.ButtonStyle.secondary),
    "info": ("ℹ️", "Info", discord.ButtonStyle.secondary),
    "delete": ("🗑️", "Delete", discord.ButtonStyle.danger),
}


class JobButton(ActionButton, template=ActionButton.template_for("job")):
    KIND, ACTIONS, COG, HANDLER = "job", ACTIONS, "Imagine", "on_job_button"


# Per image: Midjourney's upscale and variation buttons, with A1111's meaning (img2img from that image).
IMAGE_ACTIONS = {
    "upscale": ("⬆️", "Upscale ×2"),
    "subtle": ("🌱", "Vary (subtle)"),
    "strong": ("🌪️", "Vary (strong)"),
}
MAX_IMAGE_ROWS = 4  # Discord allows 5 rows: the job's own buttons first, then one per image; more: a menu


def image_custom_id(job_id: int, index: int, action: str) -> str:
    return f"sdbot:img:{job_id}:{index}:{action}"


class ImageButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"sdbot:img:(?P<job>[0-9]{1,19}):(?P<index>[0-9]{1,2}):(?P<action>[a-z]+)",
):
    """Upscale ×2 / Vary under one image; the custom id carries the job and the image index (persistent)."""

    def __init__(self, job_id: int, index: int, action: str, *, numbered: bool = False, row: int | None = None):
        emoji, label = IMAGE_ACTIONS[action]
        super().__init__(
            discord.ui.Button(
                emoji=emoji,
                label=f"{label} #{index + 1}" if numbered else label,
                style=discord.ButtonStyle.secondary,
                custom_id=image_custom_id(job_id, index, action),
                row=row,
            )
        )
        self.job_id, self.index, self.action = job_id, index, action

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> ImageButton:
        if match["action"] not in IMAGE_ACTIONS:
            raise ValueError(f"unknown image action {match['action']!r}")
        return cls(int(match["job"]), int(match["index"]), match["action"])

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await admit(interaction)

    async def callback(self, interaction: discord.Interaction) -> Any:
        await dispatch(interaction, "Imagine", "on_image_button", self.job_id, self.index, self.action)


class ImageSelect(discord.ui.DynamicItem[discord.ui.Select], template=r"sdbot:imgsel:(?P<job>[0-9]{1,19})"):
    """The same choices as a menu, for a batch with more images than rows: values are `<index>:<action>`."""

    def __init__(self, job_id: int, images: int = 1, row: int | None = None) -> None:
        options = [
            discord.SelectOption(label=f"{label} #{i + 1}", value=f"{i}:{action}", emoji=emoji)
            for i in range(images)
            for action, (emoji, label) in IMAGE_ACTIONS.items()
        ][:25]
        super().__init__(
            discord.ui.Select(
                custom_id=f"sdbot:imgsel:{job_id}",
                placeholder="Upscale or vary an image…",
                options=options or [discord.SelectOption(label="-", value="0:subtle")],
                row=row,
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> ImageSelect:
        return cls(int(match["job"]))

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await admit(interaction)

    async def callback(self, interaction: discord.Interaction) -> Any:
        values = self.item.values
        match = re.fullmatch(r"([0-9]{1,2}):([a-z]+)", values[0]) if values else None
        if match is None or match[2] not in IMAGE_ACTIONS:
            await reply_error(interaction, ValueError(f"unknown choice {values!r}"))
            return
        await dispatch(interaction, "Imagine", "on_image_button", self.job_id, int(match[1]), match[2])


def job_view(job_id: int, images: int = 1) -> discord.ui.View:
    """The job's buttons, then per image a row of Upscale / Vary buttons (a menu past `MAX_IMAGE_ROWS` images)."""
    view = discord.ui.View(timeout=None)
    for action in ACTIONS:
        view.add_item(JobButton(job_id, action))
    if images <= MAX_IMAGE_ROWS:
        for index in range(images):
            for action in IMAGE_ACTIONS:
                view.add_item(ImageButton(job_id, index, action, numbered=images > 1, row=index + 1))
    else:
        view.add_item(ImageSelect(job_id, images, row=1))
    return view


class EditModal(ReplyingModal, title="Edit and run again"):
    """Prefilled with the job's prompt and options; submitted through the same parser as /imagine."""

    def __init__(self, job_id: int, prompt: str, negative: str, options: str, on_submit) -> None:
        super().__init__(custom_id=f"sdbot:edit:{job_id}")
        self.prompt: discord.ui.TextInput[Any] = discord.ui.TextInput(
            label="Prompt",
            style=discord.TextStyle.paragraph,
            default=prompt[:4000],
            max_length=4000,
            custom_id="prompt",
        )
        self.negative: discord.ui.TextInput[Any] = discord.ui.TextInput(
            label="Negative prompt",
            style=discord.TextStyle.paragraph,
            default=negative[:4000],
            required=False,
            max_length=4000,
            custom_id="negative",
        )
        self.options: discord.ui.TextInput[Any] = discord.ui.TextInput(
            label="Options",
            default=options[:4000],
            required=False,
            max_length=4000,
            custom_id="options",
            placeholder="--steps 30 --cfg 7 --sampler Euler a --seed 5",
        )
        for item in (self.prompt, self.negative, self.options):
            self.add_item(item)
        self._on_submit = on_submit

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self._on_submit(interaction, self.prompt.value, self.negative.value, self.options.value)


class RemixModal(ReplyingModal, title="Remix this image"):
    """Apps > Remix: the prompt (prefilled when the image is one of ours) and the denoising strength."""

    def __init__(self, message_id: int, prompt: str, on_submit) -> None:
        super().__init__(custom_id=f"sdbot:remix:{message_id}")
        self.prompt: discord.ui.TextInput[Any] = discord.ui.TextInput(
            label="Prompt (options like --steps 30 work too)",
            style=discord.TextStyle.paragraph,
            default=prompt[:4000] or None,
            max_length=4000,
            custom_id="prompt",
        )
        self.strength: discord.ui.TextInput[Any] = discord.ui.TextInput(
            label="Strength: how much to change it (0-1)", default="0.75", max_length=8, custom_id="strength"
        )
        self.add_item(self.prompt)
        self.add_item(self.strength)
        self._on_submit = on_submit

    async def on_submit(self, interaction: discord.Interaction) -> None:
        try:
            strength = float(self.strength.value.strip().replace(",", "."))
        except ValueError:
            strength = -1.0
        if not 0.0 <= strength <= 1.0:
            raise UserError(f"strength takes a number from 0 to 1, e.g. 0.75 (got {self.strength.value!r})")
        await self._on_submit(interaction, self.prompt.value, strength)


class SavePresetModal(ReplyingModal, title="Save as preset"):
    def __init__(self, job_id: int, on_submit) -> None:
        super().__init__(custom_id=f"sdbot:save:{job_id}")
        self.name: discord.ui.TextInput[Any] = discord.ui.TextInput(
            label="Preset name", min_length=1, max_length=32, custom_id="name", placeholder="letters, digits, - and _"
        )
        self.add_item(self.name)
        self._on_submit = on_submit

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self._on_submit(interaction, self.name.value)
