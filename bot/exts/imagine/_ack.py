"""How a generating command is acknowledged: journaled, deferred ("thinking…"), and its user errors answered.

Shared by /imagine, /xyz, the edit modal, Remix and the buttons that make a new job.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import discord

from bot.errors import USER_ERRORS
from bot.exts.common.interactions import reply_error
from bot.exts.imagine import _replay


@contextlib.asynccontextmanager
async def acknowledged(bot: Any, interaction: discord.Interaction, payload: dict[str, Any]):
    """Journal the command, defer ("thinking…"), then run the body that gives it a job or an answer.

    The journal entry is committed before Discord hears the acknowledgement and settled once the body ends,
    so a process killed in between leaves it for `_replay` at the next start: acknowledged means durable.
    """
    journal = bot.services.journal
    if journal is not None:
        journal.append(_replay.ack_of(interaction, payload))
    try:
        await interaction.response.defer(thinking=True)
        async with errors_replace_thinking(interaction):
            yield
    except asyncio.CancelledError:
        raise  # stopped mid-way: the entry stays for the next start
    except BaseException:
        if journal is not None:
            journal.settle(interaction.id)
        raise
    if journal is not None:
        journal.settle(interaction.id)


@contextlib.asynccontextmanager
async def errors_replace_thinking(interaction: discord.Interaction):
    """After a public defer, a user error removes the "thinking…" message and answers ephemerally instead."""
    try:
        yield
    except USER_ERRORS as exc:
        with contextlib.suppress(discord.HTTPException):
            await interaction.delete_original_response()
        await reply_error(interaction, exc)
