"""Who may act on others' jobs, as the areas read it from an interaction."""

from __future__ import annotations

import discord


def is_moderator(interaction: discord.Interaction) -> bool:
    """Manage Messages (or Administrator) in the channel of the interaction."""
    perms = interaction.permissions
    return bool(perms and (perms.manage_messages or perms.administrator))
