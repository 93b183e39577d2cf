"""What the buttons under each image and the Remix and Use as control menus do: img2img, inpainting, outpainting
and ControlNet from one image.

⬆️ Upscale ×2 and 🌱 / 🌪️ Vary: img2img from the image. 🖌️ Vary (Region): a modal asks for the region (cells of a
3×3 grid or a box in percent) and the prompt; the region becomes the mask of an inpaint of the image. 🔍 Zoom Out
1.5× / 2×: the image shrunk into the middle of a canvas of its own size, the frame outpainted. ⬅️ ➡️ ⬆️ ⬇️ Pan: one
side grown by half the image, the canvas shrunk to the server's pixel cap when it is over it. Each is the job's own
request with those changes, through the one submission pipeline (`Command(request=…)`: screened, capped and held
for review like any command), its lineage kept in the sources. Remix runs the message's image through /imagine's
path, with an optional mask; Use as control runs it as a ControlNet unit's image.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import discord

from bot.errors import USER_ERRORS, UserError
from bot.exts.common.interactions import admit, reply_error
from bot.exts.imagine import _inputs
from bot.exts.imagine._views import ControlModal, RegionModal, RemixModal, zoom_and_pan_view
from bot.option_spec import default_size, grown_size, pan_margins, zoom_out_margins
from bot.services.records import JobRecord
from bot.services.submission import Command, Requester

ZOOM = {"zoom15": 1.5, "zoom2": 2.0}
PAN = ("left", "right", "up", "down")
_DONE = {"upscale": "upscaled", "region": "varied", "zoom15": "zoomed out", "zoom2": "zoomed out"}
_NAMES = {"upscale": "Upscale ×2", "region": "Vary (Region)", "zoom15": "Zoom Out 1.5×", "zoom2": "Zoom Out 2×"}


class ImageActions:
    """Mixed into the Imagine cog (it provides `bot`, `services`, `_submit`, `_requester`, `_request_of` and
    `run_prompt`): the per-image buttons and the Remix and Use as control menus."""

    bot: Any
    services: Any
    _submit: Callable[..., Awaitable[Any]]
    _requester: Callable[[discord.Interaction], Requester]
    _request_of: Callable[[JobRecord], Any]
    run_prompt: Callable[..., Awaitable[None]]

    async def on_image_button(self, interaction: discord.Interaction, job_id: int, index: int, action: str) -> None:
        """Upscale ×2 / Vary / Vary (Region) / Zoom Out / Pan of image `index` of a job, its lineage kept."""
        job = await self.services.jobs.get(job_id)
        if action == "more":
            view = zoom_and_pan_view(job.id, index)
            text = f"🔍 Zoom Out or Pan image {index + 1} of job #{job.id}:"
            await interaction.response.send_message(text, view=view, ephemeral=True)
            return
        path, width, height = await _image_of(job, index, _DONE.get(action, "panned" if action in PAN else "varied"))
        if action == "region":

            async def submitted(modal_interaction: discord.Interaction, region: str, prompt: str) -> None:
                await self._vary_region(modal_interaction, job, index, (path, width, height), region, prompt)

            prompt = str(job.request.get("prompt", ""))
            await interaction.response.send_modal(RegionModal(job.id, index, prompt, submitted))
            return
        discord_settings = self.bot.config.settings.discord
        label = f"{_NAMES.get(action) or _name(action)} of job #{job.id}, image {index + 1}"
        sources: dict[str, str] = {"seed": "new seed"}
        if action == "upscale":
            seed = job.seed + index if job.seed is not None else -1
            changes: dict[str, Any] = dict(
                width=width * 2,
                height=height * 2,
                strength=discord_settings.upscale_strength,
                seed=seed,
                hires_upscaler=discord_settings.upscale_upscaler,
            )
            sources = {}
        elif action in ZOOM or action in PAN:
            changes = self._outpaint_changes(action, width, height)
            sources["mask"] = "the new border"
        else:
            changes = dict(width=width, height=height, strength=_inputs.VARY[action], seed=-1)
        fit = action in ZOOM or action in PAN
        await self._edited(interaction, job, path, changes, label, sources, fit)

    def _outpaint_changes(self, action: str, width: int, height: int) -> dict[str, Any]:
        """Zoom Out: a canvas of the image's own size, the image shrunk into its middle; Pan: one side grown by
        half (the engine's limits here, the server's cap in the submission)."""
        limits = self.bot.config.engine_config().limits
        if action in ZOOM:
            margins, size = zoom_out_margins(width, height, ZOOM[action]), (width, height)
        else:
            margins = pan_margins(width, height, action)
            size = grown_size(width, height, margins)
        width, height = default_size(*size, limits)
        outpaint = ",".join(map(str, margins))
        strength = self.bot.config.settings.discord.outpaint_strength
        return dict(width=width, height=height, outpaint=outpaint, strength=strength, seed=-1)

    async def _vary_region(
        self,
        interaction: discord.Interaction,
        job: JobRecord,
        index: int,
        image: tuple[Path, int, int],
        region: str,
        prompt: str,
    ) -> None:
        path, width, height = image
        mask = await asyncio.to_thread(
            _inputs.save_region_mask, region, width, height, _inputs.inputs_dir(self.bot.config)
        )
        changes = dict(
            width=width,
            height=height,
            mask=str(mask),
            prompt=prompt.strip() or str(job.request.get("prompt", "")),
            strength=self.bot.config.settings.discord.region_strength,
            seed=-1,
        )
        label = f"Vary (Region) of job #{job.id}, image {index + 1}"
        sources = {"mask": f"region {region.strip()}", "seed": "new seed"}
        await self._edited(interaction, job, path, changes, label, sources, fit=False)

    async def _edited(
        self,
        interaction: discord.Interaction,
        job: JobRecord,
        path: Path,
        changes: dict[str, Any],
        label: str,
        sources: dict[str, str],
        fit: bool,
    ) -> None:
        """The job's request from image `path` with `changes` (nothing of its own mask or outpaint kept), submitted
        as a command made from an earlier job."""
        start = dict(init_image=str(path), batch_size=1, hires=0.0, hires_steps=0, resize_mode="just")
        request = self._request_of(job).replace(**(start | {"mask": "", "outpaint": ""} | changes))
        await interaction.response.defer(thinking=True)
        async with errors_replace_thinking(interaction):
            lineage = {**(job.sources or {}), **sources, "init_image": label, "strength": label.split(" of ")[0]}
            who = self._requester(interaction)
            command = Command(who, request=request, sources=lineage, what=label, fit_to_cap=fit)
            await self._submit(interaction, command)

    async def remix(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Apps > Remix on a message with an image: a modal for the prompt, the strength and an optional mask,
        then img2img (or inpainting) from that image."""
        if not await admit(interaction):
            return
        attachment = _inputs.first_image(message)
        if attachment is None:
            raise UserError("that message has no image to remix: Remix needs a PNG, JPEG or WebP attachment")
        _inputs.check_declared_size(attachment, self.bot.config.engine_config().limits)
        job = await self.services.jobs.by_message(message.id)
        prompt = job.request.get("prompt", "") if job is not None else ""

        async def submitted(
            modal_interaction: discord.Interaction, text: str, strength: float, mask: discord.Attachment | None
        ) -> None:
            typed = {"strength": strength}
            await self.run_prompt(modal_interaction, text, typed, [], image=attachment, mask=mask)

        await interaction.response.send_modal(RemixModal(message.id, prompt, submitted))

    async def use_as_control(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Apps > Use as control on a message with an image: a modal for the prompt, the ControlNet model and the
        preprocessor, then a render steered by that image (a ControlNet unit)."""
        if not await admit(interaction):
            return
        attachment = _inputs.first_image(message)
        if attachment is None:
            raise UserError("that message has no image to use as control: it needs a PNG, JPEG or WebP attachment")
        _inputs.check_declared_size(attachment, self.bot.config.engine_config().limits)

        async def submitted(modal_interaction: discord.Interaction, text: str, model: str, module: str) -> None:
            unit = {"module": module or "none", **({"model": model} if model else {})}
            await self.run_prompt(modal_interaction, text, {"controls": [unit]}, [], control=attachment)

        await interaction.response.send_modal(ControlModal(message.id, submitted))


def _name(action: str) -> str:
    return f"Pan {action}" if action in PAN else f"Vary ({action})"


async def _image_of(job: JobRecord, index: int, what: str) -> tuple[Path, int, int]:
    """Image `index` of `job` and its size; UserError when it is gone."""
    paths = job.result_paths or []
    if index >= len(paths) or not Path(paths[index]).exists():
        raise UserError(f"image {index + 1} of job #{job.id} is gone (deleted), so it cannot be {what}")
    path = Path(paths[index])
    width, height = await asyncio.to_thread(_inputs.image_size, path)
    return path, width, height


@contextlib.asynccontextmanager
async def errors_replace_thinking(interaction: discord.Interaction):
    """After a public defer, a user error removes the "thinking…" message and answers ephemerally instead."""
    try:
        yield
    except USER_ERRORS as exc:
        with contextlib.suppress(discord.HTTPException):
            await interaction.delete_original_response()
        await reply_error(interaction, exc)
