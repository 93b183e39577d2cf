"""Commands a killed process acknowledged but never saved (the journal, `bot.store.journal`), replayed at start.

Each pending entry whose interaction already has a job (the process died between the job's commit and settling
the entry) is just settled. The others run as they would have: the same presets and options, resolved now, the
same moderation checks, as a job of the same member in the same channel. While the interaction's token lives
(15 minutes) the "thinking…" message becomes the job's progress and result, through the token (a webhook: no
`Interaction` object survives a restart); after that the result goes to the channel with a mention, like any
late result. A command that cannot run now (its preset was deleted, a cap is reached) gets a clear "could not be
run" reply in the same place. The entry is settled either way, so a replay happens once. A command's attachments
(its image and its mask, downloaded after the acknowledgement) are downloaded again from their URLs and checked as
the first time.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bot.errors import USER_ERRORS, UserError
from bot.exts.common.interactions import user_message
from bot.exts.imagine import _inputs
from bot.option_spec import GenerationRequest
from bot.services.records import Ack
from bot.services.submission import Command, Requester

log = logging.getLogger(__name__)

Submit = Callable[..., Awaitable[Any]]


def ack_of(interaction: discord.Interaction, payload: dict[str, Any]) -> Ack:
    return Ack(
        interaction.id,
        interaction.application_id,
        interaction.token,
        interaction.user.id,
        interaction.guild_id,
        interaction.channel_id,
        payload,
    )


class TokenInteraction:
    """What `DiscordJobListener` uses of an interaction, rebuilt from its token after a restart."""

    def __init__(self, bot, application_id: int, token: str) -> None:
        self.followup = discord.Webhook.partial(application_id, token, client=bot)
        self.filesize_limit = None

    async def edit_original_response(self, **kwargs: Any) -> discord.Message:
        original: Any = "@original"  # Discord's id for an interaction's first response; discord.py types an int
        return await self.followup.edit_message(original, **kwargs)


async def replay(bot, submit: Submit, submit_grid: Submit) -> int:
    """Replay the journal's pending commands (see the module docstring); returns how many became jobs."""
    journal = bot.services.journal
    if journal is None:
        return 0
    pending = journal.pending()
    if not pending:
        return 0
    saved = await bot.services.jobs.interactions_with_jobs([a.interaction_id for a in pending])
    made = 0
    for ack in pending:
        if ack.interaction_id not in saved:
            made += await _replay_one(bot, ack, submit, submit_grid)
        journal.settle(ack.interaction_id)
    log.info(
        "journal: %d acknowledged command(s) a previous run had not saved; %d became jobs",
        len(pending) - len(saved),
        made,
    )
    return made


async def _replay_one(bot, ack: Ack, submit: Submit, submit_grid: Submit) -> int:
    lifetime = bot.config.settings.discord.token_lifetime_s
    interaction = TokenInteraction(bot, ack.application_id, ack.token) if ack.age_s < lifetime else None
    who = Requester(ack.user_id, ack.guild_id, ack.channel_id, ack.interaction_id)
    try:
        command = await _command_of(bot, ack, who)
        if "xyz" in ack.payload:  # an X/Y/Z grid: the same axes
            await submit_grid(interaction, command, list(ack.payload["xyz"]), resumed=True, age_s=ack.age_s)
        else:
            await submit(interaction, command, resumed=True, age_s=ack.age_s)
        return 1
    except USER_ERRORS as exc:
        text = f"⚠️ your command could not be run after the bot restarted: {user_message(exc)[2:].lstrip()}"
    except Exception as exc:
        log.exception("journal: could not replay interaction %s", ack.interaction_id)
        text = f"⚠️ your command could not be run after the bot restarted: {user_message(exc)}"
    await _tell(bot, ack, interaction, text)
    return 0


async def _command_of(bot, ack: Ack, who: Requester) -> Command:
    payload = ack.payload
    limits = bot.config.engine_config().limits
    if "request" in payload:  # a re-roll: the request was resolved already
        return Command(
            who,
            request=GenerationRequest(**payload["request"], limits=limits),
            sources=payload.get("sources") or {},
            paced=False,
        )
    typed = {k: tuple(v) if isinstance(v, list) else v for k, v in (payload.get("typed") or {}).items()}
    start, sized_by_image = None, False
    if payload.get("image"):  # its attachment was not saved yet: downloaded again, checked as the first time
        if not payload.get("image_url"):
            raise UserError(f"its image ({payload['image']}) was not saved before the restart; send it again")
        start = await _inputs.save_from_url(
            bot.http, payload["image_url"], payload["image"], _inputs.inputs_dir(bot.config), limits
        )
        sized_by_image = "width" not in typed and "aspect_ratio" not in typed
        typed = _inputs.with_start_image(typed, start, limits)
    sources = {"init_image": start.label} if start else {}
    if payload.get("mask"):  # the same for its mask
        if not payload.get("mask_url"):
            raise UserError(f"its mask ({payload['mask']}) was not saved before the restart; send it again")
        mask = await _inputs.save_from_url(
            bot.http, payload["mask_url"], payload["mask"], _inputs.inputs_dir(bot.config), limits, mask=True
        )
        typed, sources = {**typed, "mask": str(mask.path)}, {**sources, "mask": mask.label}
    if payload.get("control"):  # its ControlNet image: downloaded again, checked as the first time
        if not payload.get("control_url"):
            raise UserError(
                f"its ControlNet image ({payload['control']}) was not saved before the restart; send it again"
            )
        kept = await _inputs.save_from_url(
            bot.http, payload["control_url"], payload["control"], _inputs.inputs_dir(bot.config), limits
        )
        sized_by_image = sized_by_image or ("width" not in typed and "aspect_ratio" not in typed and start is None)
        typed = _inputs.with_control_image(typed, kept, limits, sized=start is None)
        sources["controls"] = kept.label
    return Command(
        who,
        typed,
        payload.get("presets") or [],
        sources=sources,
        start_sized=sized_by_image,
        paced=False,
    )


async def _tell(bot, ack: Ack, interaction: TokenInteraction | None, text: str) -> None:
    """In place of "thinking…" while the token lives, else in the channel with a mention."""
    try:
        if interaction is not None:
            try:
                await interaction.edit_original_response(content=text[:2000])
                return
            except discord.NotFound:
                pass
        if ack.channel_id is not None:
            channel = bot.get_partial_messageable(ack.channel_id, guild_id=ack.guild_id)
            await channel.send(
                f"<@{ack.user_id}> {text}"[:2000],
                allowed_mentions=discord.AllowedMentions(users=[discord.Object(ack.user_id)]),
            )
    except discord.HTTPException:
        log.warning("journal: could not tell user %s that their command failed", ack.user_id, exc_info=True)
