"""/xyz: A1111's X/Y/Z plot on Discord, and opening one of its cells as an ordinary result.

The prompt, options and start image are /imagine's, taken the same way (`Imagine.run_prompt`: inline `--options`,
presets, typed options winning, journaled and acknowledged); `x`, `y` and `z` are the script's axes (`Steps: 10, 20,
30`, `CFG Scale: 5-9 (+2)`, `Sampler: Euler, DPM++ 2M Karras`). One service call makes the grid
(bot/services/submission.py).
"""

from __future__ import annotations

import asyncio
import io

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import UserError
from bot.exts.common.params import Cfg, ClipSkip, Hires, HiresSteps, Negative, Prompt, Seed, Steps, Strength
from bot.exts.common.uploads import prepare_uploads
from bot.exts.imagine import _format
from bot.exts.imagine._autocomplete import AUTOCOMPLETE, RESIZE_MODES, axes
from bot.exts.imagine._grid import DiscordGridListener
from bot.exts.imagine._images import errors_replace_thinking
from bot.exts.imagine._views import job_view
from bot.option_spec import describe, lora_tag
from bot.options import append_to_prompt, from_slash
from bot.services.records import JobRecord
from bot.services.submission import Command

Axis = app_commands.Range[str, 3, 1000]


class Xyz(commands.Cog):
    def __init__(self, bot) -> None:
        self.bot = bot

    @property
    def services(self):
        return self.bot.services

    @app_commands.command(name="xyz", description="An A1111 X/Y/Z plot: one prompt across settings, as one grid")
    @app_commands.describe(
        **describe(
            "negative",
            "preset",
            "steps",
            "cfg",
            "sampler",
            "seed",
            "size",
            "clip_skip",
            "vae",
            "model",
            "lora",
            "strength",
            "resize_mode",
            "hires",
            "hires_steps",
            "hires_upscaler",
            prompt="What to draw; options like --steps 30 --seed 5 --<preset> work as in /imagine",
            x="Columns, e.g. Steps: 10, 20, 30 (ranges: 1-5, 1-5 (+2), 10-20 [3])",
            y="Rows, e.g. CFG Scale: 5-9 (+2)",
            z="One grid per value, e.g. Sampler: Euler, DPM++ 2M Karras",
            image="Start every cell from this image (img2img): PNG, JPEG or WebP",
            mask="Inpaint: change only the white part of the image (PNG, JPEG or WebP; needs image)",
            control_image="ControlNet: steer every cell with this image; --cn MODULE[:WEIGHT] in the prompt sets it up",
        )
    )
    @app_commands.autocomplete(x=axes, y=axes, z=axes, **AUTOCOMPLETE)
    @app_commands.choices(resize_mode=RESIZE_MODES)
    async def xyz(
        self,
        interaction: discord.Interaction,
        prompt: Prompt,
        x: Axis,
        y: Axis | None = None,
        z: Axis | None = None,
        negative: Negative | None = None,
        preset: str | None = None,
        steps: Steps | None = None,
        cfg: Cfg | None = None,
        sampler: str | None = None,
        seed: Seed | None = None,
        size: str | None = None,
        clip_skip: ClipSkip | None = None,
        vae: str | None = None,
        model: str | None = None,
        lora: app_commands.Range[str, 1, 200] | None = None,
        image: discord.Attachment | None = None,
        mask: discord.Attachment | None = None,
        strength: Strength | None = None,
        resize_mode: str | None = None,
        hires: Hires | None = None,
        hires_steps: HiresSteps | None = None,
        hires_upscaler: str | None = None,
        control_image: discord.Attachment | None = None,
    ) -> None:
        """Discord allows 25 options: /imagine's, but `batch` (a cell is one image) and the ControlNet unit's
        settings, which `--cn MODULE[:WEIGHT]` in the prompt gives."""
        typed = from_slash(
            negative=negative,
            steps=steps,
            cfg=cfg,
            sampler=sampler,
            seed=seed,
            size=size,
            clip_skip=clip_skip,
            vae=vae,
            model=model,
            strength=strength,
            resize_mode=resize_mode,
            hires=hires,
            hires_steps=hires_steps,
            hires_upscaler=hires_upscaler,
        )
        if lora:
            prompt = append_to_prompt(prompt, lora_tag(lora.strip()))
        imagine = self.bot.get_cog("Imagine")  # the same path as /imagine: inline options, images, the journal
        await imagine.run_prompt(
            interaction,
            prompt,
            typed,
            [preset] if preset else [],
            image=image,
            mask=mask,
            control=control_image,
            axes=[x, y, z],
        )

    async def submit(
        self, interaction, command: Command, texts: list[str | None], resumed: bool = False, age_s: float = 0.0
    ) -> JobRecord:
        """The one service call (also a command replayed from the journal)."""
        who = command.who
        channel_id = who.channel_id
        if channel_id is None:  # Discord sends a channel with every command; a replayed one kept it
            raise UserError("this command needs a channel to post its grid in")

        def listen() -> DiscordGridListener:
            return DiscordGridListener(
                self.bot,
                user_id=who.user_id,
                channel_id=channel_id,
                guild_id=who.guild_id,
                interaction=interaction,
                resumed=resumed,
                age_s=age_s,
            )

        return await self.services.submissions.submit_grid(command, texts, listen)

    async def on_cell(self, interaction: discord.Interaction, job_id: int, index: int) -> None:
        """A cell chosen in a grid's menu: posted as an ordinary result, with its own buttons."""
        grid = await self.services.grids.grid_of_job(job_id)
        if not 0 <= index < len(grid.cells):
            raise UserError(f"grid #{job_id} has no cell {index + 1}")
        label, cell = grid.cells[index]
        files = self.services.jobs.files_of(cell)
        if not files:
            raise UserError(f"cell {index + 1} of grid #{job_id} has no image (it failed, or it was deleted)")
        await interaction.response.defer(thinking=True)
        async with errors_replace_thinking(interaction):
            limit = interaction.guild.filesize_limit if interaction.guild else 0
            batches, note = await asyncio.to_thread(prepare_uploads, files, limit or 10 * 2**20)
            attachments = [discord.File(io.BytesIO(u.data), filename=u.filename) for u in batches[0]]
            embed = _format.parameters_embed(
                cell.id, cell.request, cell.sources or {}, [cell.seed] if cell.seed else None
            )
            content = _format.clip(
                f"🔎 Cell {index + 1} of grid #{job_id}: {label}" + (f"\n-# {note}" if note else ""), 2000
            )
            await interaction.followup.send(content, files=attachments, embed=embed, view=job_view(cell.id))
