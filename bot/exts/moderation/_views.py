"""The review queue's buttons and the reject modal. Persistent: the custom id carries the item id and the action
(`sdbot:mod:<item>:approve|reject|ban`), the item lives in the database, so the buttons work after a restart.
Showing them is no permission: every press is checked by the moderation service."""

from __future__ import annotations

import re
from typing import Any

import discord

from bot.app import admit, reply_error

ACTIONS = {
    "approve": ("✅", "Approve", discord.ButtonStyle.success),
    "reject": ("❌", "Reject", discord.ButtonStyle.danger),
    "ban": ("🚫", "Reject and ban", discord.ButtonStyle.danger),
}


def custom_id(item_id: int, action: str) -> str:
    return f"sdbot:mod:{item_id}:{action}"


class ModButton(discord.ui.DynamicItem[discord.ui.Button],
                template=r"sdbot:mod:(?P<item>[0-9]{1,19}):(?P<action>[a-z]+)"):
    def __init__(self, item_id: int, action: str, row: int | None = None) -> None:
        emoji, label, style = ACTIONS[action]
        super().__init__(discord.ui.Button(emoji=emoji, label=label, style=style, row=row,
                                           custom_id=custom_id(item_id, action)))
        self.item_id = item_id
        self.action = action

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> "ModButton":
        action = match["action"]
        if action not in ACTIONS:
            raise ValueError(f"unknown moderation action {action!r}")
        return cls(int(match["item"]), action)

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await admit(interaction)

    async def callback(self, interaction: discord.Interaction) -> Any:
        cog = interaction.client.get_cog("Moderation")
        try:
            await cog.on_mod_button(interaction, self.item_id, self.action)
        except Exception as exc:  # noqa: BLE001 - every error becomes a reply, none a silent failure
            await reply_error(interaction, exc)


def review_view(item_ids: list[int]) -> discord.ui.View:
    """Approve / Reject / Reject and ban for each item, one row per item (at most five)."""
    view = discord.ui.View(timeout=None)
    for row, item_id in enumerate(item_ids[:5]):
        for action in ACTIONS:
            view.add_item(ModButton(item_id, action, row=row))
    return view


class RejectModal(discord.ui.Modal):
    """Why (shown to the user), and for a ban, for how long."""

    def __init__(self, item_id: int, ban: bool, on_submit) -> None:
        super().__init__(title="Reject and ban" if ban else "Reject", custom_id=f"sdbot:modreject:{item_id}:{int(ban)}")
        self.reason = discord.ui.TextInput(label="Reason (the user sees it)", style=discord.TextStyle.paragraph,
                                           min_length=1, max_length=1000, custom_id="reason",
                                           placeholder="e.g. not allowed on this server")
        self.add_item(self.reason)
        self.duration: discord.ui.TextInput | None = None
        if ban:
            self.duration = discord.ui.TextInput(label="Ban for", default="1d", max_length=40, custom_id="duration",
                                                 placeholder="30m, 12h, 7d, 2w or forever")
            self.add_item(self.duration)
        self._on_submit = on_submit

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self._on_submit(interaction, self.reason.value, self.duration.value if self.duration else None)

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        await reply_error(interaction, error)
