"""Text and embeds of the review queue, /mod and /config (pure: the services' records in, Discord objects out)."""

from __future__ import annotations

from pathlib import Path

import discord

from bot.exts.common.formatting import clip
from bot.services.image_policy import scores_line
from bot.services.moderation import History
from bot.services.records import AuditRecord, BanRecord, ItemStatus, JobRecord, ReviewItemRecord, SettingsRecord

PENDING_COLOUR, APPROVED_COLOUR, REJECTED_COLOUR = 0xF0B232, 0x23A55A, 0xDA373C


def _code(text: str, limit: int) -> str:
    # Backticks would end the block early; a look-alike keeps the prompt readable and the block intact.
    return f"```\n{clip(text.replace('`', 'ˋ'), limit)}\n```" if text else "(empty)"


def kind(job: JobRecord) -> str:
    return "images" if job.result_paths else "prompt"


def review_embed(item: ReviewItemRecord, job: JobRecord) -> discord.Embed:
    """The review channel's card for one item: the prompt, who asked, where, why it is held, and the outcome."""
    colour = {ItemStatus.APPROVED.value: APPROVED_COLOUR, ItemStatus.REJECTED.value: REJECTED_COLOUR}
    embed = discord.Embed(
        title=f"Review #{item.id}: {kind(job)} of job #{job.id}",
        description=_code(str(job.request.get("prompt", "")), 3900),
        colour=colour.get(item.status, PENDING_COLOUR),
    )
    embed.add_field(name="Asked by", value=f"<@{job.user_id}>")
    embed.add_field(name="Where", value=f"<#{job.channel_id}>" if job.channel_id else "direct messages")
    if item.reason:
        embed.add_field(name="Held because", value=clip(item.reason, 1024), inline=False)
    if job.request.get("init_image"):
        embed.add_field(name="Start image", value="attached as start-image.png (img2img from it)", inline=False)
    if job.request.get("mask"):
        embed.add_field(name="Mask", value="attached as mask.png (white: the part redrawn)", inline=False)
    elif job.request.get("outpaint"):
        embed.add_field(name="Outpaint", value=f"the image grown by {job.request['outpaint']} (L,T,R,B)", inline=False)
    controls = control_images(job)
    if controls:
        names = ", ".join(f"control-image-{i}.png" for i in range(1, len(controls) + 1))
        embed.add_field(name="ControlNet images", value=f"attached as {names} (they steer the image)", inline=False)
    if job.image_scores:
        lines = [f"image {i}: {scores_line(scores)}" for i, scores in enumerate(job.image_scores, start=1)]
        embed.add_field(name="Image classifier", value=clip("\n".join(lines), 1024), inline=False)
    negative = str(job.request.get("negative_prompt", "") or "")
    if negative:
        embed.add_field(name="Negative prompt", value=clip(negative, 1024), inline=False)
    if item.status != ItemStatus.PENDING.value:
        verb = "✅ Approved" if item.status == ItemStatus.APPROVED.value else "❌ Rejected"
        why = f": {item.decision_reason}" if item.decision_reason else ""
        embed.add_field(name="Decision", value=clip(f"{verb} by <@{item.decided_by}>{why}", 1024), inline=False)
    return embed


def queue_text(rows: list[tuple[ReviewItemRecord, JobRecord]]) -> str:
    if not rows:
        return "Nothing is waiting for review."
    lines = [f"**{len(rows)} waiting for review** (oldest first; buttons for the first five):"]
    for item, job in rows:
        prompt = clip(str(job.request.get("prompt", "")).replace("\n", " "), 80)
        lines.append(f"• #{item.id} · {kind(job)} · <@{job.user_id}> in <#{job.channel_id}>: {prompt}")
    return clip("\n".join(lines), 2000)


def _when(entry_time) -> str:
    return f"<t:{int(entry_time.timestamp())}:f>"


def _entry_line(entry: AuditRecord) -> str:
    what = {
        "approve": "✅ approved",
        "reject": "❌ rejected",
        "ban": "🚫 banned",
        "unban": "↩️ unbanned",
        "delete": "🗑️ deleted images of",
        "denied": "⛔ was refused",
    }.get(entry.action, entry.action)
    job = f" job #{entry.job_id}" if entry.job_id else ""
    why = f": {clip(entry.reason, 100)}" if entry.reason else ""
    return f"{_when(entry.created_at)} <@{entry.actor_id}> {what}{job}{why}"


def _ban_line(ban: BanRecord) -> str:
    until = "for good" if ban.expires_at is None else f"until {_when(ban.expires_at)}"
    scope = "everywhere" if ban.guild_id is None else "here"
    lifted = f" (lifted {_when(ban.lifted_at)})" if ban.lifted_at else ""
    why = f": {clip(ban.reason, 100)}" if ban.reason else ""
    return f"{_when(ban.created_at)} banned {scope} {until} by <@{ban.actor_id}>{lifted}{why}"


def history_embed(user_id: int, history: History) -> discord.Embed:
    embed = discord.Embed(title="Moderation history", description=f"<@{user_id}>")
    embed.add_field(name="Bans", value=clip("\n".join(map(_ban_line, history.bans)) or "none", 1024), inline=False)
    embed.add_field(
        name="Decisions", value=clip("\n".join(map(_entry_line, history.entries)) or "none", 1024), inline=False
    )
    return embed


def settings_text(s: SettingsRecord) -> str:
    def cap(value) -> str:
        return "engine limit" if value is None else str(value)

    return "\n".join(
        [
            f"**Moderation mode:** {s.moderation_mode}",
            f"**Review channel:** {f'<#{s.review_channel_id}>' if s.review_channel_id else 'none (use /mod queue)'}",
            f"**Moderator role:** {f'<@&{s.moderator_role_id}>' if s.moderator_role_id else 'none'}",
            f"**Decisions reach users by:** {'direct message' if s.notify_by == 'dm' else 'a mention in the channel'}"
            " (once the command's 15 minutes are over)",
            f"**Live previews:** {'on' if s.previews else 'off'}",
            f"**Age-restricted channels (auto mode):** {nsfw_text(s)}",
            f"**Banned words:** {len(s.banned_words)} · **flagged words:** {len(s.flagged_words)}",
            f"**Caps:** steps {cap(s.max_steps)} · pixels {cap(s.max_pixels)} · batch {cap(s.max_batch)} · "
            f"waiting jobs per member {cap(s.max_jobs_per_user)} · prompt characters {cap(s.max_prompt_chars)}",
        ]
    )


def words_text(kind_: str, words: list[str]) -> str:
    if not words:
        return f"The {kind_} word list is empty."
    return clip(f"**{kind_.capitalize()} words ({len(words)}):** " + ", ".join(f"`{w}`" for w in words), 2000)


def nsfw_text(s: SettingsRecord) -> str:
    if s.nsfw_flag_above is None or s.nsfw_block_above is None:
        return "the same thresholds as other channels"
    if s.nsfw_flag_above >= 1:
        return "nothing is held"
    return f"held above {s.nsfw_flag_above:.2f}, refused above {s.nsfw_block_above:.2f}"


def control_images(job: JobRecord) -> list[Path]:
    """The job's ControlNet images still on disk, each once (units may share one)."""
    paths = dict.fromkeys(Path(unit["image"]) for unit in job.request.get("controls") or [] if unit.get("image"))
    return [path for path in paths if path.is_file()]
