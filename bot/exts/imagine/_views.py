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


# Per image: Midjourney's upscale, variation, region, zoom and pan buttons, with A1111's meaning (img2img, inpainting
# and outpainting from that image).
IMAGE_ACTIONS = {
    "upscale": ("⬆️", "Upscale ×2"),
    "subtle": ("🌱", "Vary (subtle)"),
    "strong": ("🌪️", "Vary (strong)"),
    "region": ("🖌️", "Vary (Region)"),
    "zoom15": ("🔍", "Zoom Out 1.5×"),
    "zoom2": ("🔍", "Zoom Out 2×"),
    "left": ("⬅️", ""),
    "right": ("➡️", ""),
    "up": ("⬆️", ""),
    "down": ("⬇️", ""),
    "more": ("🔍", "Zoom / Pan"),  # several images: one button per image opens its zoom and pan buttons
}
ZOOM_AND_PAN = ("zoom15", "zoom2", "left", "right", "up", "down")
# A row holds 5 buttons: one image gets all ten on two rows; several get five each on their own row (the zoom and
# pan buttons behind "Zoom / Pan"), up to `MAX_IMAGE_ROWS`; more images get a menu.
SINGLE_IMAGE_ROWS = (("upscale", "subtle", "strong", "region", "zoom15"), ("zoom2", "left", "right", "up", "down"))
IMAGE_ROW = ("upscale", "subtle", "strong", "region", "more")
MENU_ACTIONS = ("upscale", "subtle", "strong", "region", "more")
MAX_IMAGE_ROWS = 4  # Discord allows 5 rows: the job's own buttons first, then the images' rows


def image_custom_id(job_id: int, index: int, action: str) -> str:
    return f"sdbot:img:{job_id}:{index}:{action}"


class ImageButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"sdbot:img:(?P<job>[0-9]{1,19}):(?P<index>[0-9]{1,2}):(?P<action>[a-z0-9]+)",
):
    """One image's Upscale ×2 / Vary / Vary (Region) / Zoom Out / Pan; the custom id carries the job and the image
    index (persistent)."""

    def __init__(self, job_id: int, index: int, action: str, *, numbered: bool = False, row: int | None = None):
        emoji, label = IMAGE_ACTIONS[action]
        super().__init__(
            discord.ui.Button(
                emoji=emoji,
                label=(f"{label} #{index + 1}" if label else f"#{index + 1}") if numbered else (label or None),
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
            discord.SelectOption(label=f"{IMAGE_ACTIONS[action][1]} #{i + 1}", value=f"{i}:{action}", emoji=emoji)
            for i in range(images)
            for action in MENU_ACTIONS
            for emoji in [IMAGE_ACTIONS[action][0]]
        ][:25]
        super().__init__(
            discord.ui.Select(
                custom_id=f"sdbot:imgsel:{job_id}",
                placeholder="Upscale, vary, zoom or pan an image…",
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
        match = re.fullmatch(r"([0-9]{1,2}):([a-z0-9]+)", values[0]) if values else None
        if match is None or match[2] not in IMAGE_ACTIONS:
            await reply_error(interaction, ValueError(f"unknown choice {values!r}"))
            return
        await dispatch(interaction, "Imagine", "on_image_button", self.job_id, int(match[1]), match[2])


def job_view(job_id: int, images: int = 1) -> discord.ui.View:
    """The job's buttons, then the images' (see `SINGLE_IMAGE_ROWS`, `IMAGE_ROW`; a menu past `MAX_IMAGE_ROWS`)."""
    view = discord.ui.View(timeout=None)
    for action in ACTIONS:
        view.add_item(JobButton(job_id, action))
    if images == 1:
        for row, actions in enumerate(SINGLE_IMAGE_ROWS, start=1):
            for action in actions:
                view.add_item(ImageButton(job_id, 0, action, row=row))
    elif images <= MAX_IMAGE_ROWS:
        for index in range(images):
            for action in IMAGE_ROW:
                view.add_item(ImageButton(job_id, index, action, numbered=True, row=index + 1))
    else:
        view.add_item(ImageSelect(job_id, images, row=1))
    return view


def zoom_and_pan_view(job_id: int, index: int) -> discord.ui.View:
    """One image's Zoom Out and Pan buttons (the "Zoom / Pan" button's reply), persistent like the others."""
    view = discord.ui.View(timeout=None)
    for action in ZOOM_AND_PAN:
        view.add_item(ImageButton(job_id, index, action, row=0 if action.startswith("zoom") else 1))
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
    """Apps > Remix: the prompt (prefilled when the image is one of ours), the denoising strength and an optional
    mask (white = change: inpainting instead of img2img)."""

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
        self.mask: discord.ui.FileUpload = discord.ui.FileUpload(
            custom_id="mask", required=False, min_values=0, max_values=1
        )
        self.add_item(self.prompt)
        self.add_item(self.strength)
        self.add_item(discord.ui.Label(text="Mask (optional): white = the part to change", component=self.mask))
        self._on_submit = on_submit

    async def on_submit(self, interaction: discord.Interaction) -> None:
        try:
            strength = float(self.strength.value.strip().replace(",", "."))
        except ValueError:
            strength = -1.0
        if not 0.0 <= strength <= 1.0:
            raise UserError(f"strength takes a number from 0 to 1, e.g. 0.75 (got {self.strength.value!r})")
        await self._on_submit(interaction, self.prompt.value, strength, next(iter(self.mask.values), None))


class RegionModal(ReplyingModal, title="Vary (Region)"):
    """🖌️ under an image: the region to draw again, without a drawing tool, and the prompt (prefilled)."""

    def __init__(self, job_id: int, index: int, prompt: str, on_submit) -> None:
        super().__init__(custom_id=f"sdbot:region:{job_id}:{index}")
        self.region: discord.ui.TextInput = discord.ui.TextInput(
            label="Region: grid cells (a1 b2) or a box in %",
            placeholder="a1 b2 (columns a-c, rows 1-3 from the top-left) or 25,25,75,75",
            max_length=100,
            custom_id="region",
        )
        self.prompt: discord.ui.TextInput = discord.ui.TextInput(
            label="Prompt for the region",
            style=discord.TextStyle.paragraph,
            default=prompt[:4000] or None,
            max_length=4000,
            custom_id="prompt",
        )
        self.add_item(self.region)
        self.add_item(self.prompt)
        self._on_submit = on_submit

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self._on_submit(interaction, self.region.value, self.prompt.value)


class ControlModal(ReplyingModal, title="Use as control (ControlNet)"):
    """Apps > Use as control: the prompt, the ControlNet model (empty: one named after the preprocessor) and the
    preprocessor that makes the map from the image (none: the image is a map already)."""

    def __init__(self, message_id: int, on_submit) -> None:
        super().__init__(custom_id=f"sdbot:control:{message_id}")
        self.prompt: discord.ui.TextInput = discord.ui.TextInput(
            label="Prompt (options like --steps 30 work too)",
            style=discord.TextStyle.paragraph,
            max_length=4000,
            custom_id="prompt",
        )
        self.model: discord.ui.TextInput = discord.ui.TextInput(
            label="ControlNet model (empty: by the preprocessor)",
            required=False,
            max_length=200,
            custom_id="model",
            placeholder="control_v11p_sd15_canny",
        )
        self.module: discord.ui.TextInput = discord.ui.TextInput(
            label="Preprocessor: canny, none, invert…", default="canny", max_length=100, custom_id="module"
        )
        for item in (self.prompt, self.model, self.module):
            self.add_item(item)
        self._on_submit = on_submit

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self._on_submit(interaction, self.prompt.value, self.model.value.strip(), self.module.value.strip())


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
