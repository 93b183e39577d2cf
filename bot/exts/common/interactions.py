"""What every command, button and modal does first and last: the ban check (`admit`) and the one way errors
become an ephemeral reply (`reply_error`, `user_message`). The app's command tree uses them too."""

from __future__ import annotations

import logging
import uuid

import discord
from discord import app_commands

from bot.errors import USER_ERRORS
from bot.services import Services

log = logging.getLogger(__name__)


def user_message(error: BaseException) -> str:
    """What the user sees for an error: ours verbatim, anything else as an id to quote (the input is kept)."""
    while isinstance(error, (app_commands.CommandInvokeError, app_commands.TransformerError)) and error.__cause__:
        error = error.__cause__
    if isinstance(error, USER_ERRORS):
        return f"⚠️ {error}"
    if isinstance(error, app_commands.CheckFailure):
        return f"⚠️ {error}" if str(error) else "⚠️ you can't use this here"
    error_id = uuid.uuid4().hex[:8]
    log.error("unexpected error %s", error_id, exc_info=error)
    return f"something went wrong (error id {error_id}); nothing you typed was lost, please try again"


async def reply_error(interaction: discord.Interaction, error: BaseException) -> None:
    """Tell the user ephemerally, whether or not the interaction was answered already."""
    text = user_message(error)[:2000]
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException:
        log.warning("could not report an error to the user", exc_info=True)


def services_of(client: discord.Client) -> Services | None:
    """The bot's services, or None for a client that is not the bot (tests of a bare view)."""
    services = getattr(client, "services", None)
    return services if isinstance(services, Services) else None


async def admit(interaction: discord.Interaction) -> bool:
    """The one ban check, for commands and buttons alike: a banned user gets one clear message and nothing runs.

    In memory (`bot.services.bans`), so it adds no database work before the answer."""
    services = services_of(interaction.client)
    if services is None:
        return True
    ban = services.bans.ban_of(interaction.user.id, interaction.guild_id)
    if ban is None:
        return True
    try:
        if interaction.type is discord.InteractionType.autocomplete:
            await interaction.response.autocomplete([])
        elif not interaction.response.is_done():
            await interaction.response.send_message(ban.message(), ephemeral=True)
    except discord.HTTPException:
        log.warning("could not tell a banned user", exc_info=True)
    return False
