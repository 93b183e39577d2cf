"""/config (the guild's rules), /mod (the queue, bans, history) and the review buttons.

Each handler acknowledges, calls the moderation service (which decides who may do what, server-side, whatever
Discord showed), and answers ephemerally. `default_permissions` hide the commands from members who lack
Manage Server (/config) or Manage Messages (/mod); the service checks again, as a hidden command is no check.
"""

from __future__ import annotations

from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.exts.common.actor import actor_of
from bot.exts.moderation import _format
from bot.exts.moderation._duration import describe, parse_duration
from bot.exts.moderation._views import RejectModal, review_view
from bot.services.image_policy import parse_nsfw_thresholds
from bot.services.moderation import WordKind

Mode = Literal["off", "flagged", "prompts", "images", "auto"]


def split_words(text: str) -> list[str]:
    """`a, b c, d` -> ["a", "b c", "d"]: commas (or new lines) separate entries; an entry may be a phrase."""
    return [w.strip() for w in text.replace("\n", ",").split(",") if w.strip()]


class Moderation(commands.Cog):
    config = app_commands.Group(
        name="config",
        description="The bot's rules on this server",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )
    mod = app_commands.Group(
        name="mod",
        description="Review queue, bans and history",
        guild_only=True,
        default_permissions=discord.Permissions(manage_messages=True),
    )

    def __init__(self, bot) -> None:
        self.bot = bot

    @property
    def moderation(self):
        return self.bot.services.moderation

    async def _reply(self, interaction: discord.Interaction, content: str = "", **kwargs) -> None:
        await interaction.followup.send(content or discord.utils.MISSING, ephemeral=True, **kwargs)

    async def _configure_or_show(self, interaction: discord.Interaction, actor, changes: dict) -> None:
        """Apply the changes (managers only, audited), or with none just show the settings; reply with them."""
        if changes:
            settings = await self.moderation.configure(actor, **changes)
        else:
            await self.moderation.require_manager(actor, "config")
            settings = await self.moderation.settings(actor.guild_id)
        await self._reply(interaction, _format.settings_text(settings))

    # --- /config -------------------------------------------------------------------------------------------
    @config.command(name="moderation", description="What is reviewed, where, by whom; no options: show settings")
    @app_commands.describe(
        mode="off: banned words only; flagged: prompts with flagged words wait; prompts: every prompt waits; "
        "images: results wait; auto: the image classifier holds doubtful results",
        review_channel="Where held prompts and images wait for a moderator",
        moderator_role="Members with this role moderate (besides Manage Messages in the review channel)",
        notify="How users hear of decisions after their command's 15 minutes: dm or channel",
        nsfw_channels="auto mode in age-restricted channels: flag and block scores (e.g. 0.8 0.95), off or default",
    )
    async def config_moderation(
        self,
        interaction: discord.Interaction,
        mode: Mode | None = None,
        review_channel: discord.TextChannel | None = None,
        moderator_role: discord.Role | None = None,
        notify: Literal["dm", "channel"] | None = None,
        nsfw_channels: app_commands.Range[str, 1, 40] | None = None,
    ) -> None:
        scores = parse_nsfw_thresholds(nsfw_channels) if nsfw_channels is not None else None
        await interaction.response.defer(ephemeral=True, thinking=True)
        actor = actor_of(interaction)
        changes: dict[str, Any] = {
            k: v
            for k, v in dict(
                moderation_mode=mode,
                review_channel_id=review_channel.id if review_channel else None,
                moderator_role_id=moderator_role.id if moderator_role else None,
                notify_by=notify,
            ).items()
            if v is not None
        }
        if scores is not None:
            changes["nsfw_flag_above"], changes["nsfw_block_above"] = scores
        await self._configure_or_show(interaction, actor, changes)

    @config.command(name="words", description="Banned words refuse a prompt; flagged words send it to review")
    @app_commands.describe(
        action="add, remove or list", which="Which list", words="Comma-separated: word, phrase, nud*"
    )
    @app_commands.rename(which="list")
    async def config_words(
        self,
        interaction: discord.Interaction,
        action: Literal["add", "remove", "list"],
        which: WordKind,
        words: app_commands.Range[str, 0, 4000] = "",
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        actor = actor_of(interaction)
        if action == "list":
            await self.moderation.require_manager(actor, "words")
            settings = await self.moderation.settings(actor.guild_id)
            await self._reply(interaction, _format.words_text(which, getattr(settings, f"{which}_words")))
            return
        changed = await self.moderation.edit_words(actor, which, split_words(words), add=action == "add")
        verb = "added to" if action == "add" else "removed from"
        shown = ", ".join(f"`{w}`" for w in changed) if changed else "nothing"
        await self._reply(interaction, _format.clip(f"{shown} {verb} the {which} words", 2000))

    @config.command(name="caps", description="Caps on what members may ask for here; 0 removes a cap")
    @app_commands.describe(
        steps="Most denoising steps",
        pixels="Most pixels (width x height)",
        batch="Most images per command",
        jobs_per_user="Most waiting jobs per member",
        prompt_chars="Longest prompt, in characters",
    )
    async def config_caps(
        self,
        interaction: discord.Interaction,
        steps: app_commands.Range[int, 0, 1000] | None = None,
        pixels: app_commands.Range[int, 0, 16777216] | None = None,
        batch: app_commands.Range[int, 0, 16] | None = None,
        jobs_per_user: app_commands.Range[int, 0, 1000] | None = None,
        prompt_chars: app_commands.Range[int, 0, 20000] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        given = dict(
            max_steps=steps,
            max_pixels=pixels,
            max_batch=batch,
            max_jobs_per_user=jobs_per_user,
            max_prompt_chars=prompt_chars,
        )
        changes = {k: (v or None) for k, v in given.items() if v is not None}
        actor = actor_of(interaction)
        await self._configure_or_show(interaction, actor, changes)

    @config.command(name="previews", description="Show live preview images while images render here")
    async def config_previews(self, interaction: discord.Interaction, enabled: bool) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        settings = await self.moderation.configure(actor_of(interaction), previews=enabled)
        await self._reply(interaction, _format.settings_text(settings))

    # --- /mod ----------------------------------------------------------------------------------------------
    @mod.command(name="queue", description="Prompts and images waiting for review")
    async def mod_queue(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        rows = await self.moderation.queue(actor_of(interaction))
        kwargs = {"view": review_view([item.id for item, _ in rows])} if rows else {}
        await self._reply(interaction, _format.queue_text(rows), **kwargs)

    @mod.command(name="ban", description="Keep a member from using the bot here")
    @app_commands.describe(user="Who", duration="30m, 12h, 7d, 2w or forever", reason="Why (kept in the history)")
    async def mod_ban(
        self,
        interaction: discord.Interaction,
        user: discord.User,
        duration: str = "1d",
        reason: app_commands.Range[str, 0, 1000] = "",
    ) -> None:
        length = parse_duration(duration)
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.moderation.ban(actor_of(interaction), user.id, length, reason)
        await self._reply(
            interaction,
            f"🚫 <@{user.id}> is banned from the bot here {describe(length)}",
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @mod.command(name="unban", description="Lift a member's ban from the bot here")
    async def mod_unban(self, interaction: discord.Interaction, user: discord.User) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        lifted = await self.moderation.unban(actor_of(interaction), user.id)
        text = f"↩️ <@{user.id}> may use the bot again" if lifted else f"<@{user.id}> was not banned here"
        await self._reply(interaction, text, allowed_mentions=discord.AllowedMentions.none())

    history = app_commands.Group(name="history", description="Moderation history", parent=mod)

    @history.command(name="user", description="A member's bans and the decisions about them")
    async def mod_history_user(self, interaction: discord.Interaction, user: discord.User) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        found = await self.moderation.history(actor_of(interaction), user.id)
        await self._reply(
            interaction, embed=_format.history_embed(user.id, found), allowed_mentions=discord.AllowedMentions.none()
        )

    # --- review buttons ------------------------------------------------------------------------------------
    async def on_mod_button(self, interaction: discord.Interaction, item_id: int, action: str) -> None:
        actor = actor_of(interaction)
        if action == "approve":
            await interaction.response.defer(ephemeral=True, thinking=True)
            decision = await self.moderation.approve(actor, item_id)
            await self._reply(interaction, f"✅ approved review #{item_id}: job #{decision.job.id} goes ahead")
            return
        # A modal must be the first answer, so the permission check (server-side, audited) comes before it.
        await self.moderation.require_moderator(actor, action, item_id)
        ban = action == "ban"

        async def submitted(modal_interaction: discord.Interaction, reason: str, duration: str | None) -> None:
            length = parse_duration(duration) if ban and duration is not None else None
            await modal_interaction.response.defer(ephemeral=True, thinking=True)
            decision = await self.moderation.reject(
                actor_of(modal_interaction), item_id, reason, ban=ban, ban_for=length
            )
            text = f"❌ rejected review #{item_id}"
            if decision.ban is not None:
                text += f" and banned <@{decision.job.user_id}> {describe(length)}"
            await self._reply(modal_interaction, text, allowed_mentions=discord.AllowedMentions.none())

        await interaction.response.send_modal(RejectModal(item_id, ban, submitted))
