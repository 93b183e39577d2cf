"""/preset save|list|show|rename|delete|default|import|export: thin handlers over the preset service."""

from __future__ import annotations

import io
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import UserError
from bot.exts.common.formatting import clip
from bot.exts.common.interactions import reply_error
from bot.exts.common.params import Batch, Cfg, ClipSkip, Negative, Seed, Steps
from bot.exts.presets._format import describe_options, preset_lines
from bot.option_spec import GenerationRequest, describe, read_png_infotext
from bot.options import from_slash, parse_inline, sized_by_ratio
from bot.services.presets import presettable

MAX_IMPORT_BYTES = 1024 * 1024


class ConfirmDelete(discord.ui.View):
    """A short-lived confirm button: only the preset's owner may press it."""

    def __init__(self, cog: Presets, user_id: int, name: str) -> None:
        super().__init__(timeout=120)
        self.cog, self.user_id, self.name = cog, user_id, name

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id != self.user_id:
            await interaction.response.send_message("⚠️ only the preset's owner can confirm this", ephemeral=True)
            return False
        return True

    @discord.ui.button(label="Delete", style=discord.ButtonStyle.danger, emoji="🗑️")
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self.cog.services.presets.delete(self.user_id, self.name)
        self.stop()
        await interaction.response.edit_message(content=f"🗑️ preset **{self.name}** deleted", view=None)

    @discord.ui.button(label="Keep it", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.stop()
        await interaction.response.edit_message(content=f"preset **{self.name}** kept", view=None)

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: Any) -> None:
        await reply_error(interaction, error)


class Presets(commands.GroupCog, group_name="preset", group_description="Your saved option sets"):
    def __init__(self, bot) -> None:
        self.bot = bot
        super().__init__()

    @property
    def services(self):
        return self.bot.services

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Acknowledge every command at once (privately); handlers then answer with follow-ups."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        return True

    async def _name_choices(self, interaction: discord.Interaction, current: str):
        names = await self.services.presets.names(interaction.user.id, current)
        return [app_commands.Choice(name=n, value=n) for n in names[:25]]

    @app_commands.command(name="save", description="Save options as a preset (create or update)")
    @app_commands.describe(
        **describe(
            "prefix",
            "suffix",
            "negative",
            "steps",
            "cfg",
            "sampler",
            "seed",
            "size",
            "clip_skip",
            "vae",
            "model",
            "batch",
            name="1-32 letters, digits, - or _",
            options="Options in the inline syntax: --steps 30 --cfg 7 --no blur",
            from_last="Copy the options of your last image",
        )
    )
    async def save(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, 32],
        options: app_commands.Range[str, 0, 2000] | None = None,
        prefix: app_commands.Range[str, 0, 1000] | None = None,
        suffix: app_commands.Range[str, 0, 1000] | None = None,
        negative: Negative | None = None,
        steps: Steps | None = None,
        cfg: Cfg | None = None,
        sampler: str | None = None,
        seed: Seed | None = None,
        size: str | None = None,
        clip_skip: ClipSkip | None = None,
        vae: str | None = None,
        model: str | None = None,
        batch: Batch | None = None,
        from_last: bool = False,
    ) -> None:
        values: dict[str, Any] = {}
        if from_last:
            last = await self.services.jobs.last_for(interaction.user.id)
            if last is None:
                raise UserError("you have no image yet to copy options from; make one with /imagine")
            values.update({k: v for k, v in presettable(last.request).items() if k != "prompt"})
        given: dict[str, Any] = {}
        if options:
            inline = parse_inline(options if options.lstrip().startswith(("--", "—")) else "--" + options.lstrip())
            if inline.presets:
                raise UserError(
                    f"options can't name a preset (--{inline.presets[0]}): a preset holds options "
                    "such as --steps 30 --cfg 7"
                )
            given.update(inline.options)
        given.update(
            from_slash(
                prefix=prefix,
                suffix=suffix,
                negative=negative,
                steps=steps,
                cfg=cfg,
                sampler=sampler,
                seed=seed,
                size=size,
                clip_skip=clip_skip,
                vae=vae,
                model=model,
                batch=batch,
            )
        )
        # A preset stores a concrete size: --ar gives one as /imagine would, at the area of the size it replaces.
        base = (values.get("width", GenerationRequest.width), values.get("height", GenerationRequest.height))
        values.update(sized_by_ratio(given, base))
        if not values:
            raise UserError(
                "give at least one option to save, e.g. /preset save name:portrait options:--ar 2:3, or from_last:true"
            )
        result = await self.services.presets.save(interaction.user.id, name, values)
        verb = "created" if result.created else "updated"
        await interaction.followup.send(
            f"💾 preset **{result.preset.name}** {verb}: {describe_options(result.preset.options)}\n"
            f"use it with `--{result.preset.name}` in a prompt or `/imagine preset:{result.preset.name}`",
            ephemeral=True,
        )

    @app_commands.command(name="list", description="Your presets")
    async def list_(self, interaction: discord.Interaction) -> None:
        presets, default = await self.services.presets.list_with_default(interaction.user.id)
        if not presets:
            await interaction.followup.send("you have no presets yet: /preset save", ephemeral=True)
            return
        body = preset_lines([(p.name, p.options) for p in presets], default)
        await interaction.followup.send(f"your presets ({len(presets)}):\n{body}", ephemeral=True)

    @app_commands.command(name="show", description="One preset's options")
    @app_commands.autocomplete(name=_name_choices)
    async def show(self, interaction: discord.Interaction, name: str) -> None:
        preset = await self.services.presets.get(interaction.user.id, name)
        await interaction.followup.send(f"**{preset.name}**: {describe_options(preset.options)}", ephemeral=True)

    @app_commands.command(name="rename", description="Rename a preset")
    @app_commands.autocomplete(old=_name_choices)
    async def rename(self, interaction: discord.Interaction, old: str, new: app_commands.Range[str, 1, 32]) -> None:
        preset = await self.services.presets.rename(interaction.user.id, old, new)
        await interaction.followup.send(f"✏️ preset **{old}** is now **{preset.name}**", ephemeral=True)

    @app_commands.command(name="delete", description="Delete a preset (asks first)")
    @app_commands.autocomplete(name=_name_choices)
    async def delete(self, interaction: discord.Interaction, name: str) -> None:
        preset = await self.services.presets.get(interaction.user.id, name)
        await interaction.followup.send(
            f"delete preset **{preset.name}** ({describe_options(preset.options)})?",
            view=ConfirmDelete(self, interaction.user.id, preset.name),
            ephemeral=True,
        )

    @app_commands.command(name="default", description="Apply a preset to every /imagine, or `clear`")
    @app_commands.autocomplete(name=_name_choices)
    async def default(self, interaction: discord.Interaction, name: str) -> None:
        if name.strip().lower() == "clear":
            cleared = await self.services.presets.clear_default(interaction.user.id)
            text = "default preset cleared" if cleared else "you had no default preset"
        else:
            preset = await self.services.presets.set_default(interaction.user.id, name)
            text = f"⭐ **{preset.name}** now applies to every /imagine (typed options still win)"
        await interaction.followup.send(text, ephemeral=True)

    @app_commands.command(name="import", description="Import an A1111 infotext (text or PNG) or a preset export")
    @app_commands.describe(
        name="Preset name (for an infotext)",
        text="A1111 infotext (PNG Info text)",
        file="A PNG made by A1111/sdbot, or a JSON file from /preset export",
    )
    async def import_(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, 32] | None = None,
        text: app_commands.Range[str, 1, 6000] | None = None,
        file: discord.Attachment | None = None,
    ) -> None:
        user = interaction.user.id
        if file is not None:
            if file.size > MAX_IMPORT_BYTES:
                raise UserError(f"the file is {file.size} bytes; the limit is {MAX_IMPORT_BYTES}")
            data = await file.read()
            if data.startswith(b"\x89PNG"):
                text = read_png_infotext(data)
                if not text:
                    raise UserError("that PNG carries no A1111 infotext")
            else:
                result = await self.services.presets.import_json(user, data)
                parts = [
                    f"created {', '.join(result.created)}" if result.created else "",
                    f"updated {', '.join(result.updated)}" if result.updated else "",
                    f"⭐ default: {result.default}" if result.default else "",
                ]
                text = "; ".join(p for p in parts if p) or "the file holds no presets"
                await interaction.followup.send(clip("📥 " + text, 2000), ephemeral=True)
                return
        if not text:
            raise UserError("give an infotext as text, or attach a PNG or a JSON export")
        if not name:
            raise UserError("give the new preset a name (name:)")
        result = await self.services.presets.import_infotext(user, name, text)
        lines = [
            f"📥 preset **{result.preset.name}** {'created' if result.created else 'updated'}: "
            f"{describe_options(result.preset.options)}"
        ]
        if result.unknown_keys:
            lines.append("not imported (sdbot can't reproduce them): " + ", ".join(result.unknown_keys))
        if result.dropped:
            lines.append("left out on purpose: " + ", ".join(result.dropped))
        lines += result.notes
        await interaction.followup.send("\n".join(lines)[:2000], ephemeral=True)

    @app_commands.command(name="export", description="All your presets as a JSON file")
    async def export(self, interaction: discord.Interaction) -> None:
        data = await self.services.presets.export_json(interaction.user.id)
        await interaction.followup.send(
            "📤 your presets (import them with /preset import file:)",
            file=discord.File(io.BytesIO(data.encode()), filename="sdbot-presets.json"),
            ephemeral=True,
        )
