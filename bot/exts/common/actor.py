"""Who is acting, as the moderation service needs to know it: ids, roles and permissions from the interaction."""

from __future__ import annotations

import discord

from bot.services.moderation import Actor


def actor_of(interaction: discord.Interaction) -> Actor:
    """The interaction's user with their roles and permissions; the service decides what they may do."""
    user = interaction.user
    perms = interaction.permissions
    roles = frozenset(r.id for r in getattr(user, "roles", ()) if r is not None)

    def manage_messages_in(channel_id: int) -> bool | None:
        guild = interaction.guild
        channel = guild.get_channel(channel_id) if guild is not None else None
        if channel is None or not isinstance(user, discord.Member):
            return None
        return channel.permissions_for(user).manage_messages

    return Actor(
        user_id=user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        role_ids=roles,
        manage_messages=bool(perms.manage_messages),
        manage_guild=bool(perms.manage_guild),
        manage_messages_in=manage_messages_in,
    )
