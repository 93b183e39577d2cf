"""What the imagine area does with an image: its result buttons (Upscale ×2, Vary) and the message menus on any
message with an image: Remix (img2img from it) and Use as control (a ControlNet unit of it). A part of the
`Imagine` cog (a mixin), kept apart so each file stays one screenful of concerns."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import discord

from bot.errors import UserError
from bot.exts.common.interactions import admit, errors_replace_thinking
from bot.exts.imagine import _inputs
from bot.exts.imagine._views import ControlModal, RemixModal
from bot.services.submission import Command


class ImageActions:
    """Needs the cog's `bot`, `services`, `run_prompt`, `_submit`, `_requester` and `_request_of`."""

    bot: Any
    services: Any
    run_prompt: Callable[..., Awaitable[None]]
    _submit: Callable[..., Awaitable[Any]]
    _requester: Callable[[discord.Interaction], Any]
    _request_of: Callable[[Any], Any]

    async def on_image_button(self, interaction: discord.Interaction, job_id: int, index: int, action: str) -> None:
        """Upscale ×2 / Vary (subtle|strong) of image `index` of a job: img2img from that image, lineage kept."""
        job = await self.services.jobs.get(job_id)
        paths = job.result_paths or []
        what = "upscaled" if action == "upscale" else "varied"
        if index >= len(paths) or not Path(paths[index]).exists():
            raise UserError(f"image {index + 1} of job #{job.id} is gone (deleted), so it cannot be {what}")
        path = Path(paths[index])
        width, height = await asyncio.to_thread(_inputs.image_size, path)
        settings = self.bot.config.settings.discord
        common = dict(init_image=str(path), batch_size=1, hires=0.0, hires_steps=0, resize_mode="just")
        if action == "upscale":
            width, height = width * 2, height * 2
            seed = job.seed + index if job.seed is not None else -1
            changes = dict(
                width=width,
                height=height,
                strength=settings.upscale_strength,
                seed=seed,
                hires_upscaler=settings.upscale_upscaler,
            )
            label = f"Upscale ×2 of job #{job.id}, image {index + 1}"
        else:
            changes = dict(width=width, height=height, strength=_inputs.VARY[action], seed=-1)
            label = f"Vary ({action}) of job #{job.id}, image {index + 1}"
        request = self._request_of(job).replace(**common, **changes)
        await interaction.response.defer(thinking=True)
        async with errors_replace_thinking(interaction):
            sources = {**(job.sources or {}), "init_image": label, "strength": label.split(" of ")[0]}
            if action != "upscale":
                sources["seed"] = "new seed"
            await self._submit(
                interaction, Command(self._requester(interaction), request=request, sources=sources, what=label)
            )

    async def remix(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Apps > Remix on a message with an image: a modal for the prompt and strength, then img2img from it."""
        if not await admit(interaction):
            return
        attachment = _inputs.first_image(message)
        if attachment is None:
            raise UserError("that message has no image to remix: Remix needs a PNG, JPEG or WebP attachment")
        _inputs.check_declared_size(attachment, self.bot.config.engine_config().limits)
        job = await self.services.jobs.by_message(message.id)
        prompt = job.request.get("prompt", "") if job is not None else ""

        async def submitted(modal_interaction: discord.Interaction, text: str, strength: float) -> None:
            await self.run_prompt(modal_interaction, text, {"strength": strength}, [], image=attachment)

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
