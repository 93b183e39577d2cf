"""/queue (your jobs, with cancel buttons), /models, /info (what made an image) and the "Image info" menu."""

from __future__ import annotations

import re
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import UserError
from bot.exts.common.actor import actor_of
from bot.exts.common.formatting import clip, info_message
from bot.exts.common.interactions import admit, reply_error, services_of
from bot.option_spec import SCHEDULES, sampler_names
from bot.services.catalog import Catalog

_JOB_IN_MESSAGE = re.compile(r"Job #(\d+)")


class CancelButton(discord.ui.DynamicItem[discord.ui.Button], template=r"sdbot:cancel:(?P<job>[0-9]{1,19})"):
    def __init__(self, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label=f"Cancel #{job_id}",
                emoji="✖️",
                style=discord.ButtonStyle.danger,
                custom_id=f"sdbot:cancel:{job_id}",
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> CancelButton:
        return cls(int(match["job"]))

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        """A banned member gets the ban's message and nothing runs (who else may cancel is `authorize`'s)."""
        return await admit(interaction)

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            services = services_of(interaction.client)
            if services is None:
                raise RuntimeError("a cancel button pressed on a client that is not the bot")
            job = await services.jobs.get(self.job_id)
            await services.moderation.authorize(actor_of(interaction), "cancel", job=job)  # owner or moderator
            done = services.jobs.cancel(job.id) or await services.grids.cancel(job.id)  # a job, or a grid
            text = f"✖️ job #{self.job_id} cancelled" if done else f"job #{self.job_id} is no longer waiting or running"
            await interaction.response.send_message(text, ephemeral=True)
        except Exception as exc:  # noqa: BLE001 - every error becomes a reply
            await reply_error(interaction, exc)


class Info(commands.Cog):
    def __init__(self, bot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Image info", callback=self.image_info_menu)
        bot.tree.add_command(self.menu)

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Acknowledge every command at once (privately); handlers then answer with follow-ups."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        return True

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.command(name="queue", description="Your waiting and running jobs")
    async def queue(self, interaction: discord.Interaction) -> None:
        active = await self.bot.services.jobs.active_for(interaction.user.id)
        if not active:
            await interaction.followup.send("you have no jobs waiting or running", ephemeral=True)
            return
        lines, view = [], discord.ui.View(timeout=None)
        for job, position in active:
            where = (
                "rendering"
                if job.status == "running"
                else (
                    "waiting for review"
                    if job.status == "awaiting_review"
                    else f"position {position}"
                    if position
                    else "queued"
                )
            )
            lines.append(f"#{job.id} · {where} · {clip(job.request.get('prompt', ''), 80)}")
            if len(view.children) < 25:
                view.add_item(CancelButton(job.id))
        await interaction.followup.send("\n".join(lines)[:2000], view=view, ephemeral=True)

    @app_commands.command(name="models", description="Checkpoints, VAEs and samplers you can use")
    @app_commands.describe(refresh="Look in the models folder again first (after adding files)")
    async def models(self, interaction: discord.Interaction, refresh: bool = False) -> None:
        catalog = self.bot.services.catalog
        installed = await (catalog.refresh() if refresh else catalog.current())
        embed = discord.Embed(title="Models", colour=discord.Colour.blurple())
        checkpoints = installed.checkpoints or ["(none installed: the tiny demo model)"]
        embed.add_field(name="Checkpoints", value=clip("\n".join(checkpoints), 1024), inline=False)
        embed.add_field(name="VAEs", value=clip("\n".join(["auto", "none", *installed.vaes]), 1024), inline=False)
        embed.add_field(name="Samplers", value=clip(", ".join(sampler_names()), 1024), inline=False)
        embed.add_field(name="Schedule types", value=", ".join(SCHEDULES), inline=False)
        for name, value in networks_fields(installed):
            embed.add_field(name=name, value=clip(value, 1024), inline=False)
        if installed.refused:
            embed.add_field(name="Refused files", value=clip("\n".join(installed.refused), 1024), inline=False)
        await interaction.followup.send(embed=embed, ephemeral=True)

    @app_commands.command(name="info", description="What made an image: give its job number or message id")
    @app_commands.describe(id="The job number (#12) or the image message's id")
    async def info(self, interaction: discord.Interaction, id: str) -> None:
        job_id = await self._job_id(interaction, id.strip().lstrip("#"))
        await self._send_info(interaction, job_id)

    async def image_info_menu(self, interaction: discord.Interaction, message: discord.Message) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)  # menus skip the cog's check
        """The job whose images the message shows; failing that (a batch's later parts), the job one of our
        own messages names. Anyone else's message that merely says "Job #12" is not job 12's image."""
        job = await self.bot.services.jobs.by_message(message.id)
        if job is not None:
            await self._send_info(interaction, job.id)
            return
        match = None
        if self.bot.user is not None and message.author.id == self.bot.user.id:
            match = _JOB_IN_MESSAGE.search(message.content or "") or next(
                (m for e in message.embeds if (m := _JOB_IN_MESSAGE.search(e.title or ""))), None
            )
        if match is None:
            raise UserError("that message is not an sdbot image")
        await self._send_info(interaction, int(match.group(1)))

    async def _job_id(self, interaction: discord.Interaction, text: str) -> int:
        if not text.isdigit():
            raise UserError(f"give a job number such as 12, or a message id (got {text!r})")
        value = int(text)
        if value < 1 << 22:  # small numbers are job ids; snowflakes are huge
            return value
        job = await self.bot.services.jobs.by_message(value)
        if job is None:
            raise UserError("no sdbot image has that message id")
        return job.id

    async def _send_info(self, interaction: discord.Interaction, job_id: int) -> None:
        jobs = self.bot.services.jobs
        job = await jobs.get(job_id)
        if job.guild_id not in (None, interaction.guild_id) and job.user_id != interaction.user.id:
            raise UserError(f"job #{job_id} was made in another server")
        await interaction.followup.send(
            **info_message(job.id, job.request, job.sources, job.seed, jobs.infotext_of(job)), ephemeral=True
        )


def networks_fields(installed: Catalog) -> list[tuple[str, str]]:
    """/models' LoRA, embedding, ControlNet and wildcard fields: name [family], a LoRA's trigger words, why a
    ControlNet file cannot be used, the ControlNet preprocessors offered, and the wildcards."""
    loras = [
        f"{lora.name} [{lora.family}]" + (f" · {', '.join(lora.triggers)}" if lora.triggers else "")
        for lora in installed.loras
    ]
    embeddings = [f"{name} [{family}]" for name, family in installed.embeddings]
    controlnets = [
        f"{c.name} (cannot be used: {c.problem})"
        if c.problem
        else f"{c.name} [{c.family}{', union' if c.union else ''}]"
        for c in installed.controlnets
    ]
    return [
        ("LoRAs: <lora:NAME:WEIGHT> or --lora NAME:WEIGHT", "\n".join(loras) or "(none installed)"),
        ("Embeddings: write the name in a prompt", ", ".join(embeddings) or "(none installed)"),
        ("ControlNets: control_model, or --cn MODULE with an image", "\n".join(controlnets) or "(none installed)"),
        ("ControlNet preprocessors", ", ".join(installed.preprocessors)),
        (
            "Wildcards: __NAME__ in a prompt picks one of its lines",
            ", ".join(f"__{name}__" for name in installed.wildcards) or "(none: text files in models/wildcards)",
        ),
    ]
