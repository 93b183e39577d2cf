"""The review queue's buttons and the reject modal. Persistent: the custom id carries the item id and the action
(`sdbot:mod:<item>:approve|reject|ban`), the item lives in the database, so the buttons work after a restart.
Showing them is no permission: every press is checked by the moderation service."""

from __future__ import annotations

import discord

from bot.exts.common.views import ActionButton, ReplyingModal

ACTIONS = {
    "approve": ("✅", "Approve", discord.ButtonStyle.success),
    "reject": ("❌", "Reject", discord.ButtonStyle.danger),
    "ban": ("🚫", "Reject and ban", discord.ButtonStyle.danger),
}


class ModButton(ActionButton, template=ActionButton.template_for("mod")):
    KIND, ACTIONS, COG, HANDLER = "mod", ACTIONS, "Moderation", "on_mod_button"


def review_view(item_ids: list[int]) -> discord.ui.View:
    """Approve / Reject / Reject and ban for each item, one row per item (at most five)."""
    view = discord.ui.View(timeout=None)
    for row, item_id in enumerate(item_ids[:5]):
        for action in ACTIONS:
            view.add_item(ModButton(item_id, action, row=row))
    return view


class RejectModal(ReplyingModal):
    """Why (shown to the user), and for a ban, for how long."""

    def __init__(self, item_id: int, ban: bool, on_submit) -> None:
        super().__init__(title="Reject and ban" if ban else "Reject", custom_id=f"sdbot:modreject:{item_id}:{int(ban)}")
        self.reason: discord.ui.TextInput[RejectModal] = discord.ui.TextInput(
            label="Reason (the user sees it)",
            style=discord.TextStyle.paragraph,
            min_length=1,
            max_length=1000,
            custom_id="reason",
            placeholder="e.g. not allowed on this server",
        )
        self.add_item(self.reason)
        self.duration: discord.ui.TextInput[RejectModal] | None = None
        if ban:
            self.duration = discord.ui.TextInput(
                label="Ban for",
                default="1d",
                max_length=40,
                custom_id="duration",
                placeholder="30m, 12h, 7d, 2w or forever",
            )
            self.add_item(self.duration)
        self._on_submit = on_submit

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self._on_submit(interaction, self.reason.value, self.duration.value if self.duration else None)
