"""Persistent buttons: the custom id carries what they act on (`sdbot:<kind>:<id>:<action>`), the state lives in
the database, so they work after a restart. A press goes to a cog's handler; any error becomes a reply, in
modals too."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import discord
from discord.ext import commands

from bot.exts.common.interactions import admit, reply_error


async def dispatch(interaction: discord.Interaction, cog_name: str, handler: str, *args: Any) -> None:
    """`cog.handler(interaction, *args)`; every error becomes a reply, none a silent failure."""
    try:
        client = interaction.client
        cog = client.get_cog(cog_name) if isinstance(client, commands.Bot) else None
        await getattr(cog, handler)(interaction, *args)
    except Exception as exc:  # noqa: BLE001
        await reply_error(interaction, exc)


class ActionButton(
    discord.ui.DynamicItem[discord.ui.Button], template=r"sdbot:(?P<kind>[a-z]+):(?P<id>[0-9]{1,19}):(?P<action>[a-z]+)"
):
    """A button `sdbot:<KIND>:<id>:<action>` that calls `COG.HANDLER(interaction, id, action)`.

    A subclass names its `KIND`, `ACTIONS` (action -> emoji, label, style), `COG` and `HANDLER`, and its own
    template (discord.py dispatches on it): `template=ActionButton.template_for("job")`.
    """

    KIND: ClassVar[str] = ""
    ACTIONS: ClassVar[dict[str, tuple[str, str, discord.ButtonStyle]]] = {}
    COG: ClassVar[str] = ""
    HANDLER: ClassVar[str] = ""

    @staticmethod
    def template_for(kind: str) -> str:
        return rf"sdbot:{kind}:(?P<id>[0-9]{{1,19}}):(?P<action>[a-z]+)"

    def __init__(self, item_id: int, action: str, row: int | None = None) -> None:
        emoji, label, style = self.ACTIONS[action]
        super().__init__(
            discord.ui.Button(
                emoji=emoji, label=label, style=style, row=row, custom_id=f"sdbot:{self.KIND}:{item_id}:{action}"
            )
        )
        self.item_id = item_id
        self.action = action

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> ActionButton:
        if match["action"] not in cls.ACTIONS:
            raise ValueError(f"unknown {cls.KIND} action {match['action']!r}")
        return cls(int(match["id"]), match["action"])

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await admit(interaction)  # banned users get one clear message

    async def callback(self, interaction: discord.Interaction) -> Any:
        await dispatch(interaction, self.COG, self.HANDLER, self.item_id, self.action)


class ReplyingModal(discord.ui.Modal):
    """A modal whose errors become the one ephemeral reply, as a command's do."""

    async def on_error(
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any] | None = None, /
    ) -> None:
        await reply_error(interaction, error)
